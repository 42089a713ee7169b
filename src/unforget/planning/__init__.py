"""Planning a study before it runs (`unforget plan`): parameters, memory per GPU, largest batch, FLOPs and GPU-hours,
counted from the model's real config on the meta device. It sits above training (it asks each fine-tuning method
what it trains) and below the CLI; scale/ keeps only what runs inside training and evaluation (sharding, batching)."""
