"""Reading predicted QuantumGraphs: how many quanta, and which inputs a site must hold.

The graph is the exact statement of what a site will read: its *overall inputs*
(datasets consumed but not produced inside the graph) are what ``replicate_inputs``
moves to the site, no more, no less. No Airflow imports.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from lsst.daf.butler import DatasetRef
from lsst.pipe.base.quantum_graph import PredictedQuantumGraph

__all__ = ["GraphContents", "read_graph"]


@dataclasses.dataclass
class GraphContents:
    path: Path
    n_quanta: int
    quanta_by_task: dict[str, int]  # task label -> number of quanta
    overall_inputs: list[DatasetRef]
    predicted_outputs: dict[str, int]
    visits: set[int] = dataclasses.field(default_factory=set)

    @property
    def input_types(self) -> dict[str, int]:
        return dict(Counter(ref.datasetType.name for ref in self.overall_inputs))


def read_graph(path: str | Path) -> GraphContents:
    """Load a ``.qg`` file and summarise it (quanta, overall inputs, predicted outputs)."""
    qg = PredictedQuantumGraph.read_execution_quanta(str(path))
    quanta = qg.build_execution_quanta()
    produced: set = set()
    outputs: Counter[str] = Counter()
    visits: set[int] = set()
    for quantum in quanta.values():
        if quantum.dataId is not None and "visit" in quantum.dataId.dimensions.names:
            visits.add(int(quantum.dataId["visit"]))
        for refs in quantum.outputs.values():
            for ref in refs:
                produced.add(ref.id)
                outputs[ref.datasetType.name] += 1
                if "visit" in ref.dataId.dimensions.names:
                    visits.add(int(ref.dataId["visit"]))
    inputs: dict = {}
    for quantum in quanta.values():
        for refs in quantum.inputs.values():
            for ref in refs:
                if ref.id not in produced:
                    # Components and storage-class overrides resolve to their parent dataset.
                    parent = ref.makeCompositeRef() if ref.isComponent() else ref
                    inputs.setdefault(parent.id, parent)
    labels = {label: len(ids) for label, ids in qg.quanta_by_task.items()}
    return GraphContents(
        path=Path(path),
        n_quanta=len(quanta),
        quanta_by_task=labels,
        overall_inputs=sorted(inputs.values(), key=lambda r: (r.datasetType.name, str(r.dataId))),
        predicted_outputs=dict(outputs),
        visits=visits,
    )
