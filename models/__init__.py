"""Model registry: `--model X` imports `models/X_model.py` and takes its class `XModel` (a BaseModel).

Adding a model is adding one file; see `template_model.py` for the contract.
"""
import logging

from util.command_line.registry import available_names, find_class

log = logging.getLogger(__name__)


def available_models():
    return available_names("models", "_model")


def find_model_using_name(model_name):
    from models.base_model import BaseModel
    return find_class("models", model_name, "_model", BaseModel)


def get_option_setter(model_name):
    return find_model_using_name(model_name).modify_commandline_options


def create_model(opt):
    """Build the model named by `opt.model`; call `model.setup(opt)` afterwards."""
    model = find_model_using_name(opt.model)(opt)
    log.info("model [%s] was created", type(model).__name__)
    return model
