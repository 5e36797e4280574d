"""lionflow: adversarial distillation (Lion) as files-to-files pipeline stages."""
