"""Launching and supervising work: job records, the local backend, the SageMaker backend."""
