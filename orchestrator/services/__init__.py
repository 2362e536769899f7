"""Services: the trigger, room claim, admission, reconciler, operations, informer, sampler, webhooks."""
