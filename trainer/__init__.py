"""anomon's trainer: schema, encoding, autoencoder, threshold and the model bundle.

>>> from trainer import Bundle, fit, load_config  # doctest: +SKIP
>>> bundle = fit(records, load_config("anomon.yaml"))  # doctest: +SKIP
>>> bundle.save("models/web")  # doctest: +SKIP
>>> scores, contributions = Bundle.load("models/web").score(records)  # doctest: +SKIP
"""

from trainer.bundle import Bundle, BundleError
from trainer.config import Config, ConfigError, FieldSpec, config_from_dict, load_config
from trainer.fit import fit

__all__ = ["Bundle", "BundleError", "Config", "ConfigError", "FieldSpec", "config_from_dict", "fit", "load_config"]
