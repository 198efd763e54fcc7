"""Client for the Sport Image Classifier service: the `sportclf` command and a Python API.

    from sportclf import Client
    for result in Client("http://localhost:8000").classify(["photos/"]):
        print(result.path, result.status, result.top3[0].display_name if result.top3 else result.error)
"""
from sportclf.client import Client
from sportclf.results import Failure, Prediction, Result
from sportclf.transport import ServiceError

__all__ = ["Client", "Failure", "Prediction", "Result", "ServiceError"]
