"""What every config a user writes (training, pipeline, evaluation) shares: strict keys, and one
way to put its validation errors into words."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    """Unknown keys are refused, so a misspelt key is an error instead of a silently ignored default;
    assignments are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def describe_validation_error(exc: ValidationError, what: str) -> str:
    """One sentence per problem, naming its dotted location: "The config key 'unet.stepz' is not known."

    `what` names the config in the sentences ("config", "pipeline"); a model-level validator's
    problem has no location and is about the whole of it.
    """
    sentences = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        # pydantic prefixes a validator's own ValueError message with its kind; the user needs only the message.
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if error["type"] == "extra_forbidden":
            sentences.append(f"The {what} key '{where}' is not known.")
        elif where:
            sentences.append(f"The {what} value '{where}' is not valid: {message}.")
        else:
            sentences.append(f"The {what} is not valid: {message}.")
    return " ".join(sentences)
