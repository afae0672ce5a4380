"""Classifiers fitted on extracted features."""

from tlbench.classifiers.knn import KNN
from tlbench.classifiers.linear_svm import LinearSVM
from tlbench.classifiers.logistic_regression import LogisticRegression

__all__ = ["KNN", "LinearSVM", "LogisticRegression"]
