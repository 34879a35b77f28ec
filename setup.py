"""Install script for emobed-jax: crossmodal emotion embeddings (EmoBed) in JAX/Flax."""
from setuptools import find_packages, setup

# Direct dependencies, pinned. The full transitive lock used by `make` is constraints.txt.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "numpy==2.4.6",
    "scipy==1.17.1",
    "tensorflow-datasets==4.9.10",
    "importlib_resources==7.1.0",
    "array-record==0.8.6",
    "grain==0.2.18",
    "ml-collections==1.1.0",
    "absl-py==2.5.1",
    "soundfile==0.14.0",
    "tensorboardX==2.6.5",
    "tqdm==4.70.1",
    "matplotlib==3.11.2",
    "opensmile==2.6.0",
    "flatbuffers==25.12.19",  # jax.export serialisation (experiments/export.py)
]

setup(
    name="emobed_jax",
    version="0.2.0",
    description="EmoBed: crossmodal emotion embeddings in JAX/Flax (Han et al., IEEE TAC 2021)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["emobed_jax", "emobed_jax.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "audmetric==1.4.2", "librosa==0.11.0", "nbclient==0.11.0",
                 "nbformat==5.11.1", "ipykernel==7.4.0"],
    },
)
