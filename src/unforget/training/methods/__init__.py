"""Fine-tuning methods, one module each, registered in :data:`unforget.training.methods.base.METHODS`."""
