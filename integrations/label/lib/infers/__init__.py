from .anomaly_map import AnomalyMapInferTask

__all__ = ["AnomalyMapInferTask"]
