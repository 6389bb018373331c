"""The job plan: everything the job graph needs, decided once at launch by :mod:`pipeline.launch.main`.

:class:`JobPlan` is frozen and built by :func:`make_plan` from the parsed command line
(:class:`pipeline.launch.cli.JobArgs`), the loaded tokenizer and the template check; both engines
(:func:`pipeline.engines.local.engine.run_locally`, :func:`pipeline.engines.beam.graph.build_graph`) consume it
and decide nothing themselves. The manifest's launch-time part (config, fingerprint, tokenizer,
template check, versions, vision) is assembled here, once.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Mapping

from pipeline.launch.cli import JobArgs
from pipeline.steps.records import BuilderSpec
from pipeline.version import VERSION
from transforms.audit.probe import TemplateProbe, template_probe
from transforms.config import JobConfig
from transforms.formats import FormatOptions
from transforms.mixture import Mixture, Selection
from transforms.packing.mrope import MropeSpec
from transforms.packing.rows import ShardPacking
from transforms.tokenizer_loading import tokenizer_description
from transforms.vision.config import DYNAMIC


@dataclass(frozen=True, kw_only=True)
class JobPlan:
    """What to build, decided at launch (never changed afterwards).

    Attributes:
        patterns: the ``--input`` globs.
        files: the files they matched at launch (sorted), or ``None`` with ``--no-validate-inputs``
            (then the patterns are matched when the job runs).
        output: the ``--output`` folder.
        config: the :class:`~transforms.config.JobConfig` (what determines the rows; fingerprinted).
        manifest_base: the manifest's launch-time sections (a plain dict: do not mutate).
        spec: what workers need to rebuild the row builder (:class:`pipeline.steps.records.BuilderSpec`).
        num_shards: ``--num-shards``, or ``None`` for a count from the data size.
        batch_size: records per batch.
        audit_probe: the audit branch's template probe, or ``None`` when the audit is off (``--no-audit``).
        input_bytes: the matched inputs' total size (compressed files weighted, see
            :func:`pipeline.launch.main.weighted_input_bytes`), or ``None`` with ``--no-validate-inputs``.
        packing: how each shard's rows are packed when the shard is written (``--pack-length``), or
            ``None`` (rows written as built).
        selection: the mixture's per-record decisions (:class:`transforms.mixture.Selection`), set by the local
            engine once it has counted every file's records (a job with a datasets list; ``None`` otherwise and
            at launch). The Beam graph computes it as a side input instead.
    """

    patterns: tuple[str, ...]
    files: tuple[str, ...] | None
    output: str
    config: JobConfig
    manifest_base: Mapping[str, Any]
    spec: BuilderSpec
    num_shards: int | None
    batch_size: int
    audit_probe: TemplateProbe | None
    input_bytes: int | None = None
    packing: ShardPacking | None = None
    selection: Selection | None = None

    @property
    def mixture(self) -> Mixture | None:
        """The datasets of a job config file (``None``: one dataset, the ``--input`` files)."""
        return self.spec.mixture

    def record_spec(self):
        """What gives each record's parsing options: the job's ``TaskSpec``, or (a datasets list) the
        :class:`~transforms.mixture.Mixture` (each file's dataset's ``TaskSpec``)."""
        return self.spec.mixture if self.spec.mixture is not None else self.spec.task_spec

    @property
    def dedup(self) -> bool:
        return self.config.dedup

    @property
    def audit(self) -> bool:
        return self.audit_probe is not None

    @property
    def padded(self) -> bool:
        return self.spec.tokenize_options.pad_to == "max_length"

    @property
    def extra_fields(self) -> tuple:
        return self.spec.extra_fields()

    @property
    def task_spec(self):
        """The job's tokenizer-free :class:`~transforms.tasks.spec.TaskSpec` (what parsing, dedup keys, reading
        non-JSON inputs and the audit receive)."""
        return self.spec.task_spec

    def shard_schema(self):
        """The Arrow schema of the rows as built (the task's; the fragments'; the shards' unless packed)."""
        return self.spec.shard_schema()


def library_versions() -> dict[str, str]:
    """The versions recorded in the manifest, from the installed distributions' metadata (importing the
    libraries to read ``__version__`` would cost seconds: Beam and transformers are not needed by the
    local engine)."""
    return {
        "chatshards": VERSION,
        "apache_beam": metadata.version("apache-beam"),
        "transformers": metadata.version("transformers"),
        "tokenizers": metadata.version("tokenizers"),
        "pyarrow": metadata.version("pyarrow"),
        "numpy": metadata.version("numpy"),
        "python": platform.python_version(),
    }


def load_vision(job: JobArgs, tokenizer):
    """The processor family config of a ``--processor`` job (``None`` for text-only jobs), loaded once at
    launch so workers never need the processor files. Raises ``VisionConfigError`` on an unusable processor."""
    if job.processor is None:
        return None
    from transforms.vision.processors import load_vision_config  # processor families: only vision jobs load them

    return load_vision_config(job.processor, tokenizer, min_pixels=job.min_pixels, max_pixels=job.max_pixels,
                              trust_remote_code=job.trust_remote_code)


def vision_section(job: JobArgs, spec: BuilderSpec) -> dict[str, Any]:
    """The manifest's ``vision`` section: the processor config and its hash, and how images are stored
    (its ``config`` and ``images`` are also part of the config fingerprint, ``JobConfig.extra``)."""
    vision, image_options = spec.vision, job.image_options  # the command line sets image options with --processor
    return {
        "family": vision.family,
        "processor": job.processor,
        "processor_hash": vision.hash(),
        "config": vision.to_json(),
        "images": image_options.to_json(),
        "image_root": image_options.image_root,
        "columns": [field.name for field in spec.extra_fields()],
    }


def task_section(job: JobArgs, spec: BuilderSpec, tokenizer) -> dict[str, Any] | None:
    """The manifest's ``task`` section of a task other than chat (``None`` for chat): name, options, the model
    input columns the runtime serves, the collator, what the runtime needs (special ids, label maps)."""
    task_spec = spec.task_spec
    if task_spec.is_chat:
        return None
    section = task_spec.task_class.manifest_section(task_spec.options, tokenizer, job.tokenize_options)
    section["shard_columns"] = [field.name for field in spec.shard_schema()]
    return section


def task_message_format(job: JobArgs) -> dict[str, Any]:
    """The message-reading options of a task that reads chat messages (``--role-map``, ``--system-prompt``: the
    preference tasks), for its config and fingerprint; ``{}`` for the tasks that do not read them."""
    from transforms.tasks import task_class

    if not {"role_map", "system_prompt"} & set(task_class(job.task).chat_options):
        return {}
    return {"role_map": dict(job.format_options.role_map), "system_prompt": job.format_options.system_prompt}


def make_plan(job: JobArgs, tokenizer, *, template_report, files, vision=None,
              input_bytes: int | None = None) -> JobPlan:
    """The plan of ``job``: ``tokenizer`` is the loaded job tokenizer (its chat template set),
    ``template_report`` the :func:`transforms.template_check.check_template` report (``None`` for tasks other
    than chat, which render no template), ``files`` the inputs matched at launch (or ``None``), ``vision``
    what :func:`load_vision` returned."""
    spec = BuilderSpec(tokenizer=job.tokenizer, chat_template=tokenizer.chat_template,
                       trust_remote_code=job.trust_remote_code, format_options=job.format_options,
                       tokenize_options=job.tokenize_options, vision=vision, image_options=job.image_options,
                       task=job.task, task_options=job.task_options, mixture=job.mixture)
    vision_part = vision_section(job, spec) if vision is not None else None
    task_part = task_section(job, spec, tokenizer)
    description = tokenizer_description(tokenizer)
    format_json = job.format_options.to_json() if task_part is None else {
        "format": job.task_options.format, "field_map": dict(job.task_options.field_map),
        **task_message_format(job)}
    if job.mixture is not None and task_part is None:
        # the top-level format options are only the datasets' defaults: what reaches the rows is in ``mixture``
        format_json = FormatOptions(images=job.format_options.images).to_json()
    extra = {"vision": {k: vision_part[k] for k in ("config", "images")}} if vision_part else {}
    if job.packing is not None:  # the default job's config (and its fingerprint) stays as it was
        extra["packing"] = job.packing.to_json()
    config = JobConfig(format=format_json, tokenize=job.tokenize_options,
                       tokenizer=description, dedup=job.dedup, num_shards=job.num_shards, extra=extra,
                       task={"name": job.task, "options": task_part["options"]} if task_part else None,
                       mixture=job.mixture.to_json() if job.mixture is not None else None)
    template_check = template_report.to_json() if template_report is not None else None
    manifest_base = {
        "config": {**config.to_json(), "inputs": list(job.inputs)},
        "config_fingerprint": config.fingerprint(),
        "tokenizer": description,
        "chat_template_hash": description["chat_template_hash"],
        **({"template_check": template_check} if template_check is not None else {}),
        "versions": library_versions(),
        **({"vision": vision_part} if vision_part else {}),
        **({"task": task_part} if task_part else {}),
        **({"config_file": job.config_file} if job.config_file is not None else {}),
    }
    return JobPlan(
        patterns=tuple(job.inputs),
        files=tuple(files) if files is not None else None,
        output=job.output,
        config=config,
        manifest_base=manifest_base,
        spec=spec,
        num_shards=job.num_shards,
        batch_size=job.batch_size,
        audit_probe=None if job.no_audit else (
            template_probe(tokenizer, template_check) if template_check is not None else TemplateProbe()),
        input_bytes=input_bytes,
        packing=shard_packing(job, vision),
    )


def shard_packing(job: JobArgs, vision) -> ShardPacking | None:
    """What the shard writer packs with (``None`` without ``--pack-length``); Qwen-VL rows also get
    their per-sequence 3-D M-RoPE positions (:mod:`transforms.packing.mrope`)."""
    if job.packing is None:
        return None
    mrope = None
    if vision is not None and vision.family == DYNAMIC:
        mrope = MropeSpec(image_token_id=vision.image_token_id, merge_size=vision.merge_size)
    return ShardPacking(job.packing, mrope)
