"""Webhooks: job events written to an outbox with the job's final status, signed and sent later."""
