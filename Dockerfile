# One image for every service (multi-arch: linux/amd64 and linux/arm64, all wheels exist for both).
# The service is chosen by the command: python -m services.<gateway|scheduler|projector|executor>.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip install --no-cache-dir '.[executor,scheduler,projector,gateway]'
RUN useradd --create-home --uid 10001 scns
USER scns
ENV API_HOST=0.0.0.0
CMD ["python", "-m", "services.gateway"]
