"""The Dataflow job graph builds offline (``--dry_run``): no submission, no storage or network access.

``DataflowRunner`` with ``--dry_run=True`` translates the pipeline, stages the package locally and
returns before any API call; ``result.job.proto_pipeline`` is the Runner API graph Dataflow would get.
"""
from __future__ import annotations

import socket
import tarfile

import pytest

from chatshards_testing import REPO

IMAGE = "us-central1-docker.pkg.dev/test-project/chatshards/worker:2.77.0-test"
BUCKET = "gs://chatshards-test-bucket"  # a syntactically valid bucket: Beam would look up a default one otherwise
DATAFLOW_ARGS = [
    "--runner=DataflowRunner", "--dry_run=True", "--no_auth", "--project=test-project", "--region=us-central1",
    f"--temp_location={BUCKET}/tmp", f"--staging_location={BUCKET}/staging", f"--sdk_container_image={IMAGE}",
    f"--setup_file={REPO / 'setup.py'}",
]
JOB_ARGS = ["--input", f"{BUCKET}/in/*.jsonl", "--output", f"{BUCKET}/out", "--no-validate-inputs",
            "--max-length", "2048"]


class NetworkAccess(BaseException):
    """Raised on any network use; a BaseException so that retry loops (GCS clients) do not swallow it."""


@pytest.fixture(scope="module")
def offline():
    """No DNS and no TCP connections while the graph is built (a GCS call would fail the test at once)."""
    def refuse(*args, **kwargs):
        raise NetworkAccess(f"network access during an offline dry run: {args[:2]}")

    saved = socket.getaddrinfo, socket.create_connection, socket.socket.connect
    socket.getaddrinfo, socket.create_connection, socket.socket.connect = refuse, refuse, refuse
    try:
        yield
    finally:
        socket.getaddrinfo, socket.create_connection, socket.socket.connect = saved


@pytest.fixture(scope="module")
def dry_run(offline):
    try:
        import apache_beam.runners.dataflow.internal.apiclient  # noqa: F401
    except ImportError as exc:  # the Dataflow claims depend on it: fail, never skip
        pytest.fail(f"needs apache-beam[gcp] (a dependency of chatshards' job extra): {exc}")
    from pipeline.launch.cli import parse_args
    from pipeline.launch.main import run

    result, dry_run = run(parse_args([*JOB_ARGS, *DATAFLOW_ARGS]))
    assert dry_run, "--dry_run=True was not honoured"
    assert result.job is not None, "DataflowRunner returned no job description"
    return result


def environments(result):
    return list(result.job.proto_pipeline.components.environments.values())


def staged_artifacts(result) -> dict[str, str]:
    """``staged name -> local file`` of every artifact the default environment would stage."""
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    staged = {}
    for env in environments(result):
        for dep in env.dependencies:
            assert dep.type_urn == common_urns.artifact_types.FILE.urn
            assert dep.role_urn == common_urns.artifact_roles.STAGING_TO.urn
            name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dep.role_payload).staged_name
            staged[name] = beam_runner_api_pb2.ArtifactFilePayload.FromString(dep.type_payload).path
    return staged


def transform_names(result) -> list[str]:
    return [t.unique_name for t in result.job.proto_pipeline.components.transforms.values()]


def test_dry_run_returns_a_translated_job_without_submitting(dry_run):
    from apache_beam.runners.runner import PipelineState

    assert dry_run.state == PipelineState.DONE
    assert dry_run.job.options.view_as(
        __import__("apache_beam").options.pipeline_options.GoogleCloudOptions).project == "test-project"
    assert len(dry_run.job.proto_pipeline.components.transforms) > 20


def test_workers_run_the_custom_container_image(dry_run):
    from apache_beam.portability.api import beam_runner_api_pb2

    envs = environments(dry_run)
    assert [env.urn for env in envs] == ["beam:env:docker:v1"]
    payload = beam_runner_api_pb2.DockerPayload.FromString(envs[0].payload)
    assert payload.container_image == IMAGE


def test_the_package_is_staged_as_an_sdist_with_its_templates(dry_run):
    staged = staged_artifacts(dry_run)
    assert "workflow.tar.gz" in staged, sorted(staged)
    with tarfile.open(staged["workflow.tar.gz"]) as sdist:
        names = sdist.getnames()
    root = names[0].split("/")[0]
    assert root.startswith("chatshards-"), root
    for member in ("setup.py", "pipeline/launch/main.py", "pipeline/engines/beam/graph.py",
                   "pipeline/engines/beam/sink.py", "pipeline/steps/shards.py", "pipeline/io/chunks.py",
                   "transforms/rows/builder.py", "transforms/tokenizer_loading.py",
                   "transforms/templates/chatml_default_system.jinja"):
        assert f"{root}/{member}" in names, member


def test_graph_has_every_stage(dry_run):
    names = transform_names(dry_run)
    top = {name for name in names if "/" not in name}
    expected = {
        "read": "Read", "parse": "ParseRecords", "build": "BuildRows", "shard": "GroupShards",
        "write": "WriteShards", "rejected": "WriteRejected", "commit": "CommitManifest",
    }
    for stage, label in expected.items():
        assert label in top, f"{stage} stage ({label}) missing from {sorted(top)}"
    # rows reach their shard through fragment files; only (shard, fragment batch) refs are grouped
    assert {"WriteFragments", "ShardBatches", "ReadSpilled"} <= top
    # inputs are matched when the job runs (--no-validate-inputs), then spread across workers
    assert "Read/MatchAll" in names and "Read/SpreadRecords" in names


def test_graph_has_the_stats_stage(dry_run):
    """The audit branch (the README's "audit stages") is a top-level transform of the Dataflow graph."""
    top = {name for name in transform_names(dry_run) if "/" not in name}
    assert "Audit" in top, f"the audit stage (top-level transform 'Audit') is missing from {sorted(top)}"
    # it combines the rows and the rejections (Beam combiners inside the stage)
    assert any(name.startswith("Audit/") for name in transform_names(dry_run))


def test_cli_dry_run_exits_zero_without_touching_the_output(offline, capsys):
    from chatshards_testing import run_job

    assert run_job([*JOB_ARGS, *DATAFLOW_ARGS]) == 0
    assert "dry run" in capsys.readouterr().out
