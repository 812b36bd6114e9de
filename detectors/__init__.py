"""Driftline's statistics library: sketches, drift tests, detectors, performance, fairness.

Pure numpy/scipy/numba/river: no I/O, no Kafka, no configuration.
"""

from detectors.adwin import ADWIN
from detectors.change_detector import (
    DETECTOR_KINDS,
    ChangeDetector,
    detector_from_dict,
    detector_registry,
)
from detectors.cusum import CUSUM
from detectors.ddm import DDM
from detectors.eddm import EDDM
from detectors.fairness import (
    FAIRNESS_METRICS,
    GROUP_RATES,
    FairnessReport,
    FairnessResult,
    GroupRates,
    between_group_metrics,
    evaluate_fairness,
    group_rates,
    intersection_codes,
    intersection_groups,
)
from detectors.hddm_a import HDDM_A
from detectors.hddm_w import HDDM_W
from detectors.intervals import (
    newcombe_difference_interval,
    normal_interval,
    ratio_interval_log,
    t_interval,
    wilson_interval,
    z_value,
)
from detectors.kswin import KSWIN
from detectors.page_hinkley import PageHinkley
from detectors.performance import (
    LOSS_COLUMNS,
    REGRESSION_COLUMNS,
    MetricResult,
    classification_metrics,
    estimated_classification_metrics,
    expected_calibration_error,
    loss_columns,
    loss_metrics,
    regression_columns,
    regression_metrics,
    roc_auc,
)
from detectors.reference import TASKS, NumericProfile, ReferenceProfile, SensitiveProfile

__all__ = [
    # fairness
    "FAIRNESS_METRICS",
    "GROUP_RATES",
    "FairnessReport",
    "FairnessResult",
    "GroupRates",
    "between_group_metrics",
    "evaluate_fairness",
    "group_rates",
    "intersection_codes",
    "intersection_groups",
    # intervals
    "newcombe_difference_interval",
    "normal_interval",
    "ratio_interval_log",
    "t_interval",
    "wilson_interval",
    "z_value",
    # performance
    "LOSS_COLUMNS",
    "REGRESSION_COLUMNS",
    "MetricResult",
    "classification_metrics",
    "estimated_classification_metrics",
    "expected_calibration_error",
    "loss_columns",
    "loss_metrics",
    "regression_columns",
    "regression_metrics",
    "roc_auc",
    # reference
    "TASKS",
    "NumericProfile",
    "ReferenceProfile",
    "SensitiveProfile",
    # sequential change detectors
    "ADWIN",
    "CUSUM",
    "DDM",
    "DETECTOR_KINDS",
    "EDDM",
    "HDDM_A",
    "HDDM_W",
    "KSWIN",
    "ChangeDetector",
    "PageHinkley",
    "detector_from_dict",
    "detector_registry",
]
