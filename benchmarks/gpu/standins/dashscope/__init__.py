"""STAND-IN for `dashscope`, for avatarflow's GPU acceptance run only (not the real package).

Live Avatar's prompt_extend.py does `import dashscope` at module level; the SDK is only used by
`--use_prompt_extend --prompt_extend_method dashscope`, a cloud call the acceptance run never
makes (that machine has no network). Setting attributes (api_key, base_http_api_url) works;
calling the API raises a clear error.
"""

__version__ = "0.0.0+standin"
STANDIN = True

_MSG = (
    "dashscope is a stand-in on this machine (avatarflow's GPU acceptance run): the DashScope "
    "prompt-extension API is not available here; install the real dashscope SDK"
)

api_key = None
base_http_api_url = None


class _Unavailable:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        return _Unavailable(f"{self._name}.{attr}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"dashscope.{self._name}: {_MSG}")


Generation = _Unavailable("Generation")
MultiModalConversation = _Unavailable("MultiModalConversation")


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Unavailable(name)
