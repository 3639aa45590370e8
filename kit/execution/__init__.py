"""Running steps: a step task and its result (`task`), the engines that execute a notebook
(`engines`, `papermill_engines`), one step attempt (`step`), where steps run (`executors`),
the step environment (`environment`), what a run records about its machine (`provenance`),
and the coordinator that walks the graph and records the run (`coordinator`)."""
