"""Where model servers run: local processes, Docker containers, or Kubernetes Deployments."""

from __future__ import annotations

from sage_ft_serving.launchers.base import Launcher, ServerHandle, ServerSpec
from sage_ft_serving.settings import Settings


def make_launcher(settings: Settings) -> Launcher:
    kind = settings.serving.launcher
    if kind == "docker":
        from sage_ft_serving.launchers.docker import DockerLauncher

        return DockerLauncher(settings)
    if kind == "kubernetes":
        from sage_ft_serving.launchers.kubernetes import KubernetesLauncher

        return KubernetesLauncher(settings)
    from sage_ft_serving.launchers.process import ProcessLauncher

    return ProcessLauncher(settings)


__all__ = ["Launcher", "ServerHandle", "ServerSpec", "make_launcher"]
