"""Prompt templates of LLaVA v1 / LISA (``llava_v1``), LLaMA-2 chat (``llava_llama_2``) and the
other LLaVA conversation modes (``llava_v0``, ``mistral_instruct``, ``chatml_direct``, ``mpt``).

The strings produced here are byte-identical to the original ``conversation.py`` ``get_prompt``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .constants import IM_END_TOKEN, IM_START_TOKEN, IMAGE_TOKEN

# the image placeholder of models trained with --use_mm_start_end (every released LISA model)
WRAPPED_IMAGE_TOKEN = IM_START_TOKEN + IMAGE_TOKEN + IM_END_TOKEN

LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
CHATML_DIRECT_SYSTEM = "<|im_start|>system\nAnswer the questions."
MPT_SYSTEM = ("<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. "
              "The assistant gives helpful and honest answers.")
LLAMA_2_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)


@dataclass
class Conversation:
    name: str
    system: str
    roles: tuple[str, str]
    style: str  # "two" (llava_v1), "llama_2", "single" (llava_v0) or "mpt" (chatml)
    sep: str
    sep2: str
    messages: list[tuple[str, str | None]] = field(default_factory=list)

    def copy(self) -> "Conversation":
        return Conversation(self.name, self.system, self.roles, self.style, self.sep, self.sep2,
                            list(self.messages))

    def append(self, role: str, message: str | None) -> None:
        self.messages.append((role, message))

    def append_user(self, message: str) -> None:
        self.append(self.roles[0], message)

    def append_assistant(self, message: str | None) -> None:
        self.append(self.roles[1], message)

    @property
    def answer_separator(self) -> str:
        """The text that ends an instruction and starts a supervised answer (label masking)."""
        return " " + self.roles[1] + ": " if self.style == "two" else "[/INST] "

    @property
    def round_separator(self) -> str:
        return self.sep2

    @property
    def answer_prefix(self) -> str:
        """The text right before an assistant answer (label spans)."""
        if self.style == "llama_2":
            return "[/INST] "
        if self.style == "mpt":
            return self.roles[1]
        return self.roles[1] + ": "

    @property
    def answer_end(self) -> str:
        """The marker that ends an answer; supervised together with it (the model learns to stop)."""
        return self.sep2 if self.style in ("two", "llama_2") else self.sep

    @property
    def end_closes_every_turn(self) -> bool:
        """Whether ``answer_end`` also ends the system text and the user turns ("single", "mpt")."""
        return self.style in ("single", "mpt")

    def get_prompt(self) -> str:
        if self.style == "two":
            seps = (self.sep, self.sep2)
            out = self.system + seps[0]
            for i, (role, message) in enumerate(self.messages):
                if message:
                    out += role + ": " + message + seps[i % 2]
                else:
                    out += role + ":"
            return out
        if self.style in ("single", "mpt"):
            out = self.system + self.sep
            for role, message in self.messages:
                head = role + (": " if self.style == "single" else "")
                out += head + message + self.sep if message else head.rstrip(" ")
            return out
        if self.style == "llama_2":
            out = ""
            for i, (role, message) in enumerate(self.messages):
                if i == 0:
                    if role != self.roles[0]:
                        raise ValueError(f"{self.name} conversations must start with the user")
                    if message and self.system:
                        message = f"<<SYS>>\n{self.system}\n<</SYS>>\n\n" + message
                if message:
                    if role == self.roles[0]:
                        out += self.sep + f"[INST] {message} [/INST]"
                    else:
                        out += " " + message + " " + self.sep2
                # An empty assistant message leaves the prompt open after "[/INST]".
            return out[len(self.sep):] if out.startswith(self.sep) else out
        raise ValueError(f"unknown conversation style {self.style!r}")


TEMPLATES: dict[str, Conversation] = {
    "llava_v1": Conversation("llava_v1", LLAVA_V1_SYSTEM, ("USER", "ASSISTANT"), "two", " ", "</s>"),
    "vicuna_v1": Conversation("vicuna_v1", LLAVA_V1_SYSTEM, ("USER", "ASSISTANT"), "two", " ", "</s>"),
    "llava_llama_2": Conversation("llava_llama_2", LLAMA_2_SYSTEM, ("USER", "ASSISTANT"), "llama_2",
                                  "<s>", "</s>"),
    "llava_v0": Conversation("llava_v0", LLAVA_V1_SYSTEM, ("Human", "Assistant"), "single", "###", ""),
    "mistral_instruct": Conversation("mistral_instruct", "", ("USER", "ASSISTANT"), "llama_2", "", "</s>"),
    "chatml_direct": Conversation("chatml_direct", CHATML_DIRECT_SYSTEM,
                                  ("<|im_start|>user\n", "<|im_start|>assistant\n"), "mpt", "<|im_end|>", ""),
    "mpt": Conversation("mpt", MPT_SYSTEM, ("<|im_start|>user\n", "<|im_start|>assistant\n"), "mpt",
                        "<|im_end|>", ""),
}


def template_for_model_name(name: str) -> str:
    """The conversation mode LLaVA's ``cli.py`` infers from a model's name (its folder name, or
    ``<parent>_<checkpoint-N>``)."""
    name = name.lower()
    if "llama-2" in name:
        return "llava_llama_2"
    if "mistral" in name:
        return "mistral_instruct"
    if "v1.6-34b" in name:
        return "chatml_direct"
    if "v1" in name:
        return "llava_v1"
    if "mpt" in name:
        return "mpt"
    return "llava_v0"


def model_name_from_path(path: str) -> str:
    parts = str(path).rstrip("/\\").replace("\\", "/").split("/")
    if parts[-1].startswith("checkpoint-") and len(parts) > 1:
        return parts[-2] + "_" + parts[-1]
    return parts[-1]


def get_template(name: str) -> Conversation:
    try:
        return TEMPLATES[name].copy()
    except KeyError:
        raise ValueError(f"unknown --conv_type {name!r}; choose one of {sorted(TEMPLATES)}") from None


def build_prompt(user_messages: list[str], answers: list[str | None], conv_type: str = "llava_v1") -> str:
    """A prompt with alternating user/assistant turns; a final ``None`` answer leaves it open."""
    conv = get_template(conv_type)
    for i, user in enumerate(user_messages):
        conv.append_user(user)
        conv.append_assistant(answers[i] if i < len(answers) else None)
    return conv.get_prompt()


def image_placeholder(use_mm_start_end: bool) -> str:
    """What stands for the image in a prompt: ``<im_start><image><im_end>`` or ``<image>``."""
    return WRAPPED_IMAGE_TOKEN if use_mm_start_end else IMAGE_TOKEN


def expand_image_token(text: str) -> str:
    """``<image>`` -> ``<im_start><image><im_end>``, leaving already wrapped tokens alone."""
    placeholder = "\0LISA_WRAPPED_IMAGE\0"
    return (text.replace(WRAPPED_IMAGE_TOKEN, placeholder).replace(IMAGE_TOKEN, WRAPPED_IMAGE_TOKEN)
            .replace(placeholder, WRAPPED_IMAGE_TOKEN))
