"""The extras of setup.py (docs/install.md): the local job without the Google Cloud stack, Dataflow with it, a
trainer side without Beam or transformers; and the runtime really runs on the trainer side's packages alone."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# what the "train" extra does not install (torch, numpy and pyarrow are all the runtime may import)
NOT_ON_THE_TRAINER_SIDE = ("apache_beam", "transformers", "tokenizers", "jinja2", "datasets", "huggingface_hub",
                           "trl", "accelerate", "pandas", "PIL", "tiktoken")


def extras() -> dict[str, list[str]]:
    """``extras_require`` of setup.py, evaluated from its module-level lists (setup.py is never run)."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    names: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                names[node.targets[0].id] = eval(compile(ast.Expression(node.value), "setup.py", "eval"), {}, names)
            except Exception:  # noqa: BLE001 - what needs more than the constants above it (VERSION)
                continue
    call = next(node.value for node in tree.body if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call))
    keywords = {k.arg: k.value for k in call.keywords}
    return eval(compile(ast.Expression(keywords["extras_require"]), "setup.py", "eval"), {}, names)


def names_of(requirements: list[str]) -> set[str]:
    return {req.split(";")[0].split("=")[0].split(">")[0].split("<")[0].split("[")[0].strip() for req in requirements}


def test_the_extras_split_the_job_dataflow_and_trainer_sides():
    found = extras()
    assert {"job", "dataflow", "train", "hf", "dev"} <= set(found)
    beam = [req for req in found["job"] if req.startswith("apache-beam")]
    assert beam and all("[" not in req for req in beam)  # the local job: no Google Cloud stack
    assert any(req.startswith("apache-beam[gcp]==") for req in found["dataflow"])
    assert names_of(found["job"]) - {"apache-beam"} == names_of(found["dataflow"]) - {"apache-beam"}
    assert names_of(found["train"]) == {"torch"}  # the runtime: torch beside the base numpy + pyarrow
    assert {"torch", "transformers", "accelerate", "datasets", "trl"} <= names_of(found["hf"])
    assert set(found["dataflow"]) | set(found["hf"]) <= set(found["dev"])  # dev keeps everything


def test_the_runtime_trains_without_beam_or_transformers(tmp_path):
    """What the ``train`` extra installs is enough: the runtime imports and batches with everything else blocked."""
    code = f"""
import sys


class NotInstalled:  # every blocked package looks absent, as on a machine with the train extra only
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_ON_THE_TRAINER_SIDE!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
from transforms.runtime import Collator, ShardDataset, write_synthetic_dataset, LengthGroupedBatchSampler
write_synthetic_dataset({str(tmp_path / "ds")!r}, num_rows=32, num_shards=2)
ds = ShardDataset({str(tmp_path / "ds")!r})
collator = Collator.from_manifest({str(tmp_path / "ds")!r})
batch = collator([ds[i] for i in range(8)])
assert batch["input_ids"].shape[0] == 8 and (batch["labels"] == -100).any()
loaded = sorted(m.split(".")[0] for m in sys.modules)
bad = sorted(set(loaded) & set({NOT_ON_THE_TRAINER_SIDE!r}))
assert not bad, bad
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
