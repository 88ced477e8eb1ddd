"""anomon's trainer: schema, encoding, autoencoder, threshold and the model bundle.

>>> import tempfile
>>> records = [{"bytes": 100 + i % 50, "proto": "tcp" if i % 3 else "udp"} for i in range(500)]
>>> config = config_from_dict({"fields": {"bytes": "numeric", "proto": "categorical"},
...                            "model": {"epochs": 3}}, environ={})
>>> model_dir = tempfile.mkdtemp()
>>> _ = fit(records, config, verbose=False).save(model_dir)
>>> scores, contributions = Bundle.load(model_dir).score([{"bytes": 120, "proto": "tcp"},
...                                                        {"bytes": 10**9, "proto": "gre"}])
>>> bool(scores[1] > scores[0]), contributions.shape
(True, (2, 2))
"""

from trainer.bundle import Bundle, BundleError
from trainer.config import Config, ConfigError, FieldSpec, config_from_dict, load_config
from trainer.fit import fit

__all__ = ["Bundle", "BundleError", "Config", "ConfigError", "FieldSpec", "config_from_dict", "fit", "load_config"]
