"""Every stage, by name."""

from __future__ import annotations

from cgkd.stages.analyze import ANALYZE
from cgkd.stages.base import Stage
from cgkd.stages.calibrate import CALIBRATE
from cgkd.stages.classical import CLASSICAL
from cgkd.stages.distill import BASELINE, SOFT_STUDENT, STUDENT
from cgkd.stages.label import LABEL
from cgkd.stages.mapping import MAP
from cgkd.stages.prior import PRIOR
from cgkd.stages.reference import GENERATE, IMPORT
from cgkd.stages.refine import REFINED
from cgkd.stages.sample import SAMPLE
from cgkd.stages.screen import SCREEN
from cgkd.stages.segment import SEGMENT
from cgkd.stages.simulate import SIMULATE
from cgkd.stages.teach import MEMBER, TEACH
from cgkd.stages.teacher import TEACHER

#: The stages in the order data flows through them.
STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        GENERATE,
        IMPORT,
        MAP,
        PRIOR,
        MEMBER,
        TEACH,
        TEACHER,
        LABEL,
        SAMPLE,
        SCREEN,
        SOFT_STUDENT,
        STUDENT,
        BASELINE,
        REFINED,
        CLASSICAL,
        SEGMENT,
        CALIBRATE,
        SIMULATE,
        ANALYZE,
    )
}
