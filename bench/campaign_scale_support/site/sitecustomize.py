"""Bench-only (``bench/campaign_scale.py``, its real-scheduler part): on the PYTHONPATH of the bench's Airflow
stack only. When ``MULTISITE_DRP_BENCH_STANDINS`` is set, the stand-ins of
``campaign_scale_support.standins`` are put in place in this process as soon as the product
module they replace a function of is imported (and never otherwise: a process that does not
import the product pays nothing)."""

import os

if os.environ.get("MULTISITE_DRP_BENCH_STANDINS"):
    import importlib.abc
    import importlib.machinery
    import sys

    _TARGETS = ("multisite_drp.services.factory", "multisite_drp.services.qgraph", "multisite_drp.campaign.planner")

    class _PatchAfterImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name not in _TARGETS:
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return spec
            loader = spec.loader
            real_exec = loader.exec_module

            def exec_module(module):
                real_exec(module)
                from campaign_scale_support.standins import PATCHES_BY_MODULE

                PATCHES_BY_MODULE[name](module)

            loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _PatchAfterImport())
