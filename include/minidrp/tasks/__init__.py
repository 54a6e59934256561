"""The nine-step MiniCam pipeline's PipelineTasks (one module per step).

Real ``lsst.pipe.base`` PipelineTasks doing small deterministic numpy work, so
the middleware (graph building, QBB execution, aggregation) is exercised for
real while every quantum costs milliseconds.
"""

from .step1 import CalibrateTask, IsrTask
from .step2 import ConsolidateVisitTask
from .step3 import GlobalPhotoCalibTask
from .step4 import MakeCoaddTask
from .step5 import DetectCoaddTask, MeasureCoaddTask
from .step6 import ObjectTableTask
from .step7 import ForcedPhotTask
from .step8 import ForcedSourceTableTask
from .step9 import SurveySummaryTask

__all__ = [
    "CalibrateTask",
    "ConsolidateVisitTask",
    "DetectCoaddTask",
    "ForcedPhotTask",
    "ForcedSourceTableTask",
    "GlobalPhotoCalibTask",
    "IsrTask",
    "MakeCoaddTask",
    "MeasureCoaddTask",
    "ObjectTableTask",
    "SurveySummaryTask",
]
