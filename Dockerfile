# brainage on the official PyTorch CUDA runtime image (research use only, not for diagnosis).
# Build: docker build -t brainage .                      (add --build-arg EXTRAS=prepare for `brainage prepare`)
# Run:   docker run --gpus all -v $PWD:/data brainage predict --model /data/best.ckpt --input /data/scans \
#            --output /data/predictions.csv
#
# The base's torch (2.13.0, CUDA 12.6) satisfies every dependency (monai 1.6 needs torch >= 2.8), and the install
# is constrained to that torch: pip fails the build instead of swapping in a PyPI torch build. The build imports torch
# and runs a tiny BrainAgeViT forward pass. tests/test_dockerfile.py checks this file statically (no Docker engine
# runs where brainage is developed; see docs/predict.md, "Docker").
FROM pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime

ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
WORKDIR /opt/brainage
COPY pyproject.toml README.md ./
COPY brainage ./brainage
COPY configs ./configs
COPY pipelines ./pipelines
RUN python -c "import torch; print(f'torch=={torch.__version__.split(\"+\")[0]}')" > /tmp/torch-constraint.txt \
    && pip install --constraint /tmp/torch-constraint.txt ".${EXTRAS:+[$EXTRAS]}" \
    && brainage --help > /dev/null
RUN python -c "import torch; from brainage.model import BrainAgeViT, MoEConfig; \
net = BrainAgeViT(img_size=(16, 16, 16), patch_size=8, embed_dim=32, depth=1, num_heads=2, \
moe=MoEConfig(num_experts=2, top_k=1)).eval(); out = net(torch.randn(2, 1, 16, 16, 16)); \
assert out.pred.shape == (2,) and bool(torch.isfinite(out.pred).all()); \
print('forward pass ok, torch', torch.__version__)"
RUN useradd --create-home --uid 1000 brainage && mkdir -p /data && chown brainage:brainage /data
USER brainage
WORKDIR /data
ENTRYPOINT ["brainage"]
CMD ["--help"]
