"""The Prefect layer: one task per stage, each a thin call of the stage function with what Prefect adds.

* Retries only where I/O can fail: reading a hub data set (load) and a remote teacher (recycle). Model work fails
  the same way every time; a re-run resumes from the stage manifests, the caches and the training checkpoints.
* Tags for concurrency limits: every task is tagged ``selectune``; tasks that hold a model in memory are tagged
  ``selectune-model`` (``prefect concurrency-limit create selectune-model 1`` runs one at a time on a worker) and
  the recycling task ``selectune-teacher`` (a cap on concurrent use of a paid endpoint).
* Secrets: the recycling task reads the teacher's Prefect Secret block and hands the key to the library as an
  argument, never as a task parameter, result or log line.
* No result cache: outputs are files under the run dir and every run logs its MLflow child runs.
"""
