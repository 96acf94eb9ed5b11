"""Work on static tensors, captured once as a CUDA graph and replayed (``inversion.cuda_graph``).

A :class:`StaticGraph` owns the tensors its work reads and writes. Each call loads new values into them,
runs the work (:meth:`StaticGraph.run`: a replay once captured, the work itself otherwise) and reads the
outputs. :func:`capture_together` captures several of them into **one** private memory pool: they never
run at the same time, so the pool holds the largest one's activations instead of their sum: for the pivotal
stage at 16 x 512^2 the STDG graph adds 0.02 GB to the null-text graph's 13.1 GB (the pool stays reserved while
the graphs replay, so the stage reserves 17.8 GB against 16.0 GB eagerly). The price of
sharing: a graph's outputs may lie in memory another graph's replay overwrites, so a caller copies them out
before the next replay of any graph of the pool (:class:`StaticGraph` subclasses return copies).

All warm-ups run before the first capture, on one side stream. The allocator keeps cached blocks per stream, so
the current stream's cache is freed first: otherwise the warm-ups' memory comes on top of it (at 16 x 512^2 the
reserved peak was 26.0 GB with the cache kept and 17.8 GB with it freed, ``benchmarks/graph_memory_probe.py``). Their
own memory is given back before the pool takes its own (a garbage collection, then the capture empties the cache).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence

import torch


class StaticGraph:
    """Base class: :meth:`_work` on static tensors, run eagerly or replayed from a CUDA graph."""

    graph: torch.cuda.CUDAGraph | None = None

    def _work(self) -> None:
        """The captured work; reads and writes only tensors the object keeps."""
        raise NotImplementedError

    def run(self) -> None:
        """One replay, or the work itself when not captured (CPU, or capture off)."""
        if self.graph is not None:
            self.graph.replay()
        else:
            self._work()

    def release(self) -> None:
        """Drop the graph so its share of the pool can be given back (``torch.cuda.empty_cache``)."""
        if self.graph is not None:
            self.graph.reset()
        self.graph = None


def capture_together(graphs: Sequence[StaticGraph], warmup: int = 2) -> None:
    """Warm every graph up eagerly (``warmup`` runs each, on one side stream), then capture each into one
    shared private pool. Raises what the capture raises (e.g. an operation that cannot be captured);
    then no graph is left captured."""
    torch.cuda.empty_cache()  # the warm-ups run on another stream, which cannot reuse this stream's cached blocks
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for g in graphs:
            for _ in range(warmup):
                g._work()
    torch.cuda.current_stream().wait_stream(side)
    gc.collect()  # torch.cuda.graph empties the cache but no longer collects (torch.compiler.config.force_cudagraph_gc)
    pool = torch.cuda.graph_pool_handle()
    stream = torch.cuda.Stream()  # one capture stream, so that later captures reuse the pool's freed blocks
    try:
        for g in graphs:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool, stream=stream):
                g._work()
            g.graph = graph
    except BaseException:
        for g in graphs:
            g.release()
        raise
