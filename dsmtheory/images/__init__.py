"""Synthetic image tasks (THEORY §7): rules rendered into small anti-aliased images,
analytic feature extractors, and a compact score network over pixels."""

from dsmtheory.images.tasks import (
    TASKS,
    ImageTask,
    PerspectiveTask,
    RatioTask,
    ReflectionTask,
    ShadowTask,
    get_task,
)

__all__ = ["TASKS", "ImageTask", "PerspectiveTask", "RatioTask", "ReflectionTask", "ShadowTask", "get_task"]
