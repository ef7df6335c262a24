"""Choosing the channels: the selector interface and the training-free selectors (`selectors`),
SoftTopK, the predictor's head and pooling (`heads`), the trained-artifact format that carries them
(`artifact`) and the `predictor` selector that reads it. Depends on core and compensation."""
