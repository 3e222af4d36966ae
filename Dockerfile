# The pipeline image (kubeflow_v2_runner.py --image): every Vertex AI task runs it with
# KubeflowV2DagRunner's command (python -m tfx.orchestration.kubeflow.v2.container.
# kubeflow_v2_run_executor), and every Dataflow worker with its entrypoint, Beam's boot
# (--sdk_container_image).
#
# Not FROM gcr.io/tfx-oss-public/tfx:1.21.0 (TFX's image of this release, which TFX's docs
# suggest extending when its Python is yours): TFX 1.21 builds it on Python 3.10
# (tfx/tools/docker at v1.21.0: a py310 base, apache/beam_python3.10_sdk), while this package
# needs Python 3.11 (setup.py; importlib.resources.abc) and Dataflow needs the workers'
# Python and Beam to be the launching task's. Instead: Python 3.11 on Debian 13 (glibc 2.41,
# so the stack's manylinux_2_39 wheels install as they are), the exact versions of
# requirements.lock (what `make setup` installs), and Beam's boot copied from the SDK image
# of the pinned apache-beam, as Dataflow's custom-container guide does for other bases.
ARG PYTHON_IMAGE=python:3.11-slim-trixie
ARG BEAM_SDK_IMAGE=apache/beam_python3.11_sdk:2.77.0

FROM ${BEAM_SDK_IMAGE} AS beam

FROM ${PYTHON_IMAGE}
COPY --from=beam /opt/apache/beam /opt/apache/beam

# TF_USE_LEGACY_KERAS: tensorflow-transform needs Keras 2 (local_runner.py sets it itself).
ENV TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# kubeflow_v2_runner.IMAGE_ROOT: the compiled job names the schema at /pipeline/schema/.
WORKDIR /pipeline
COPY . .
RUN python -m pip install "pip==24.3.1" "setuptools==75.6.0" "wheel==0.45.1" \
 && python -m pip install -c requirements.lock . \
 && python -m pip check \
 && python -c "import tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor, pipeline.pipeline"

ENTRYPOINT ["/opt/apache/beam/boot"]
