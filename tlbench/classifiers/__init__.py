"""Classifiers fitted on extracted features."""

from tlbench.classifiers.linear_svm import LinearSVM

__all__ = ["LinearSVM"]
