import warnings

import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits_std():
    """Real data: scikit-learn's digits, standardised (1797 x 64)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    sd = X.std(0)
    X = (X - X.mean(0)) / np.where(sd > 0, sd, 1.0)
    return X, y


@pytest.fixture(autouse=True)
def _quiet_audit_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        yield


def cosine(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
