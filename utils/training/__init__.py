"""Training / fine-tuning InvSR's noise predictor (entry point: train_noise_predictor.py).

Modules, in the order data flows through them:
    kernels, degradation   Real-ESRGAN second-order degradation (HR crop -> ×4 LR input)
    data, synthetic        seeded on-the-fly training pairs; synthetic images for smoke runs
    forward                the sampler's one-step forward, differentiable in the predictor
    latent_lpips, discriminator, losses    the objective (latent MSE + LPIPS + hinge GAN)
    schedule, ema          AdamW with linear warm-up; the EMA copy that is shipped
    models                 frozen SD-Turbo around the trainable predictor
    trainer, checkpoint, validation, metrics_log   the accelerate loop and what it writes
    config, run            the YAML and a whole run; tiny_sd: tiny random SD-Turbo weights
"""
