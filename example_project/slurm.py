"""A dask-jobqueue SLURM cluster for the Label stages (constructed here, never submitted).

    python example_project/slurm.py          # prints the job script each worker runs

Start it on the login node with ``cluster.scale(jobs=4)``, keep that process running, and set
``LoopSettings(label_executor={"kind": "dask", "address": cluster.scheduler_address})``. Every
worker job then labels structures until the queue of the stage is empty.
"""

from __future__ import annotations


def slurm_cluster(
    queue: str = "compute", cores: int = 16, memory: str = "64GB", walltime: str = "04:00:00"
):
    """One dask worker per SLURM job, one thread each (a DFT code parallelises itself)."""
    from dask_jobqueue import SLURMCluster

    return SLURMCluster(
        queue=queue,
        cores=cores,
        processes=1,
        memory=memory,
        walltime=walltime,
        job_extra_directives=["--exclusive"],
        job_script_prologue=["module load cp2k", "export OMP_NUM_THREADS=1"],
        scheduler_options={"dashboard_address": None},
    )


if __name__ == "__main__":
    cluster = slurm_cluster()
    print(cluster.job_script())
    cluster.close()
