"""Every file in accelerate_configs/ goes through Accelerate's own launch path (no processes started).

`accelerate launch` loads the file with `load_config_from_file`, merges it into its arguments in
`_validate_launch_command`, picks a launcher and turns the arguments into the environment of the
training processes; the processes build their plugins from that environment. These tests run the
same functions, then build the DeepSpeed / FSDP plugins from that environment, as the Trainer does.
"""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType
from accelerate.utils.launch import (
    prepare_deepspeed_cmd_env,
    prepare_multi_gpu_env,
    prepare_simple_launcher_cmd_env,
)

from hf_transfer.distributed import installed

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "accelerate_configs"

# file -> (distributed type, processes, mixed precision, launcher accelerate picks)
EXPECTED = {
    "cpu.yaml": (DistributedType.NO, 1, "no", "simple"),
    "cpu_2proc.yaml": (DistributedType.MULTI_GPU, 2, "no", "torchrun"),
    "single_gpu.yaml": (DistributedType.NO, 1, "bf16", "simple"),
    "multi_gpu.yaml": (DistributedType.MULTI_GPU, 2, "bf16", "torchrun"),
    "multi_node_cpu.yaml": (DistributedType.MULTI_GPU, 2, "no", "torchrun"),
    "deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, 2, "bf16", "deepspeed"),
    "deepspeed_zero3.yaml": (DistributedType.DEEPSPEED, 2, "bf16", "deepspeed"),
    "fsdp.yaml": (DistributedType.FSDP, 2, "bf16", "torchrun"),
}
needs_deepspeed = pytest.mark.skipif(not installed("deepspeed"), reason="deepspeed not installed (pip install 'hf-transfer-learning[deepspeed]')")


def launch_env(config: Path) -> tuple[object, str, dict[str, str]]:
    """What `accelerate launch --config_file config scripts/finetune.py r.yaml` prepares: (args, launcher, env)."""
    args = launch_command_parser().parse_args(["--config_file", str(config), "scripts/finetune.py", "r.yaml"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    if args.use_deepspeed and not args.cpu:  # the branches of accelerate.commands.launch.launch_command
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        return args, "deepspeed", prepare_deepspeed_cmd_env(args)[1]
    if (args.use_fsdp or args.multi_gpu) and not args.cpu:
        return args, "torchrun", prepare_multi_gpu_env(args)
    return args, "simple", prepare_simple_launcher_cmd_env(args)[1]


def test_the_folder_holds_exactly_the_documented_configs():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)
    readme = (ROOT / "README.md").read_text()
    for name in EXPECTED:
        assert f"accelerate_configs/{name}" in readme, f"{name} missing from the README table"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_as_accelerate_launch_loads_it(name):
    path = CONFIGS / name
    text = path.read_text()
    assert text.startswith("#") and "accelerate launch --config_file" in text, "each config says how to use it"
    config = load_config_from_file(str(path))  # raises on unknown keys
    dist_type, processes, precision, launcher = EXPECTED[name]
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == dist_type
    assert config.num_processes == processes and config.mixed_precision == precision
    args, picked, env = launch_env(path)
    assert picked == launcher
    assert int(args.num_processes) == processes
    if launcher == "torchrun":
        assert int(args.nproc_per_node) * int(args.num_machines) == processes
    assert env["ACCELERATE_MIXED_PRECISION"] == precision


def test_cpu_2proc_starts_two_cpu_processes():
    args, launcher, _ = launch_env(CONFIGS / "cpu_2proc.yaml")
    assert launcher == "torchrun" and args.nproc_per_node == "2" and args.use_cpu


def test_multi_node_cpu_starts_one_cpu_process_per_machine():
    """What tests/test_distributed.py::test_two_machines_match_one_process launches twice (ranks 0 and 1)."""
    args, launcher, _ = launch_env(CONFIGS / "multi_node_cpu.yaml")
    assert launcher == "torchrun" and args.use_cpu
    assert (args.nnodes, args.node_rank, args.nproc_per_node) == ("2", 0, "1")
    assert (args.rdzv_backend, args.rdzv_endpoint) == ("static", "127.0.0.1:29500")  # machine 0's address


def _deepspeed_plugin(name, monkeypatch):
    from accelerate.utils import DeepSpeedPlugin

    _, launcher, env = launch_env(CONFIGS / name)
    assert launcher == "deepspeed" and env["ACCELERATE_USE_DEEPSPEED"] == "true"
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    return DeepSpeedPlugin()  # what Accelerator() builds in each process from that environment


@needs_deepspeed
@pytest.mark.parametrize("name, stage", [("deepspeed_zero2.yaml", 2), ("deepspeed_zero3.yaml", 3)])
def test_deepspeed_configs_become_the_trainers_plugin(name, stage, monkeypatch, tmp_path):
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    plugin = _deepspeed_plugin(name, monkeypatch)
    assert plugin.zero_stage == stage
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == stage
    if stage == 3:  # the gathered 16-bit save that keeps LoRA adapters and heads non-empty
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    # what transformers.integrations.deepspeed.propagate_args_to_deepspeed does inside Trainer
    hf_config = HfTrainerDeepSpeedConfig(plugin.deepspeed_config)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4,
                             gradient_accumulation_steps=3, learning_rate=1e-4, use_cpu=True)
    hf_config.trainer_config_process(args)
    config = hf_config.config
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 3
    assert config["train_batch_size"] == 4 * 3 * args.world_size
    assert hf_config.is_zero3() == (stage == 3)


def test_fsdp_config_becomes_the_trainers_plugin(monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin

    _, launcher, env = launch_env(CONFIGS / "fsdp.yaml")
    assert env["ACCELERATE_USE_FSDP"] == "true"
    for key, value in env.items():
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)  # one consolidated model on save
    assert plugin.cpu_ram_efficient_loading
