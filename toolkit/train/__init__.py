"""Training: the model registry (`models`), config, augmentation, the tf.data pipeline, fitting and metrics."""
