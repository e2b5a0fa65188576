"""gptfit's GPT as a Hugging Face model (gpt.py), and the loading of every model a run can use (loading.py).

Importing this package registers gptfit's model with the Auto classes, so `AutoModelForCausalLM`
loads a saved run's `final/` or `best/`.
"""

from gptfit.model.gpt import GPTConfig, GPTForCausalLM

__all__ = ["GPTConfig", "GPTForCausalLM"]
