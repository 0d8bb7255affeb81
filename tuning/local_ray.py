"""The Ray that runs here: whether trials run on this machine, and its CPUs and GPUs, counted
before Ray starts so that a request this machine cannot meet is refused at once (a local Ray
would otherwise wait for it forever)."""

from __future__ import annotations

import os


def runs_here(address: str | None = None) -> bool:
    """Whether trials run on this machine: no cluster address given, none in RAY_ADDRESS."""
    return address is None and not os.environ.get("RAY_ADDRESS")


def local_resources() -> dict[str, float]:
    """CPU and GPU of the running Ray, else those a local ``ray.init`` would find on this
    machine, counted as Ray counts them (its own resource spec), without starting it."""
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    from ray._private.resource_and_label_spec import ResourceAndLabelSpec

    spec = ResourceAndLabelSpec().resolve(is_head=True, node_ip_address="127.0.0.1")
    return {"CPU": float(spec.num_cpus), "GPU": float(spec.num_gpus)}
