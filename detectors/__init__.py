"""Driftline's statistics library: sketches, drift tests, detectors, performance, fairness.

Pure numpy/scipy/numba/river: no I/O, no Kafka, no configuration.
"""

from detectors.adwin import ADWIN
from detectors.attribution import (
    AttributionDriftResult,
    AttributionSketch,
    attribution_drift,
    reference_importance,
)
from detectors.cbpe import ScoreCalibrator, estimate_performance
from detectors.change_detector import (
    DETECTOR_KINDS,
    ChangeDetector,
    detector_from_dict,
    detector_registry,
)
from detectors.chi_square import chi_square_drift, chi_square_drift_rows
from detectors.count_min import CellGrid, CountMinSketch, NearDuplicateResult, near_duplicate_share
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
from detectors.g_test import g_test_drift, g_test_drift_rows
from detectors.hddm_a import HDDM_A
from detectors.hddm_w import HDDM_W
from detectors.hellinger import hellinger_drift, hellinger_drift_rows
from detectors.intervals import (
    newcombe_difference_interval,
    normal_interval,
    ratio_interval_log,
    t_interval,
    wilson_interval,
    z_value,
)
from detectors.jensen_shannon import jensen_shannon_drift, jensen_shannon_drift_rows
from detectors.kl import kl_drift, kl_drift_rows
from detectors.ks import ks_drift, ks_drift_rows, ks_pvalue, ks_statistic_bounds
from detectors.kswin import KSWIN
from detectors.multiple_testing import benjamini_hochberg
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
from detectors.psi import PSI_ALERT, PSI_WARN, psi_drift, psi_drift_rows
from detectors.reconstruction import PCAReconstruction, reconstruction_change, reconstruction_error
from detectors.reference import TASKS, NumericProfile, ReferenceProfile, SensitiveProfile
from detectors.registry import DriftTest, available_tests, get_test
from detectors.result import DriftResult, DriftResults
from detectors.slices import SliceCounts, SliceResult, degraded_subgroup, rank_slices
from detectors.total_variation import total_variation_drift, total_variation_drift_rows
from detectors.traffic import SeasonalBaseline, TrafficResult, traffic_anomaly
from detectors.wasserstein import bin_points, wasserstein_drift, wasserstein_drift_rows

__all__ = [
    # beyond drift: label-free performance, multivariate and attribution drift, slices
    "AttributionDriftResult",
    "AttributionSketch",
    "PCAReconstruction",
    "ScoreCalibrator",
    "SliceCounts",
    "SliceResult",
    "attribution_drift",
    "degraded_subgroup",
    "estimate_performance",
    "rank_slices",
    "reconstruction_change",
    "reconstruction_error",
    "reference_importance",
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
    # window-vs-reference drift tests
    "DriftResult",
    "DriftResults",
    "DriftTest",
    "PSI_ALERT",
    "PSI_WARN",
    "available_tests",
    "benjamini_hochberg",
    "bin_points",
    "chi_square_drift",
    "chi_square_drift_rows",
    "g_test_drift",
    "g_test_drift_rows",
    "get_test",
    "hellinger_drift",
    "hellinger_drift_rows",
    "jensen_shannon_drift",
    "jensen_shannon_drift_rows",
    "kl_drift",
    "kl_drift_rows",
    "ks_drift",
    "ks_drift_rows",
    "ks_pvalue",
    "ks_statistic_bounds",
    "psi_drift",
    "psi_drift_rows",
    "total_variation_drift",
    "total_variation_drift_rows",
    "wasserstein_drift",
    "wasserstein_drift_rows",
    "CellGrid",
    "CountMinSketch",
    "NearDuplicateResult",
    "near_duplicate_share",
    "SeasonalBaseline",
    "TrafficResult",
    "traffic_anomaly",
]
