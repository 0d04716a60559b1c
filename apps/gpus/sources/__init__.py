"""The sources of GPU facts: Prometheus (dcgm-exporter), Kubernetes and NVML, one module
each, reporting the plain values of `base`. Which are on is decided in apps.gpus.config.
This package imports nothing from Django, so `python -m apps.gpus.nvml_probe` runs bare."""
