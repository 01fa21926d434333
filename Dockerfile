# brainage on a CUDA PyTorch base image. Build: docker build -t brainage .
# Run:   docker run --gpus all -v $PWD:/data brainage predict --model /data/best.ckpt --input /data/scans --output /data/predictions.csv
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
WORKDIR /opt/brainage
COPY pyproject.toml README.md ./
COPY brainage ./brainage
COPY configs ./configs
COPY pipelines ./pipelines
# torch comes from the base image (CUDA build); pip keeps it because it satisfies torch>=2.5
RUN pip install . && brainage --help >/dev/null
WORKDIR /data
ENTRYPOINT ["brainage"]
CMD ["--help"]
