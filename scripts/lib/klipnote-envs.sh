# shellcheck shell=bash
# Where each worker kind's pinned environment lives; sourced by scripts/klipnote-worker and
# scripts/klipnote-cron so that both find the same environments the same way.
#
#   klipnote_env MODEL   sets env_venv, env_var, env_dir, env_torch (for the install hint), or returns 2
#
# An environment is any prefix with bin/klipnote: a venv (REPO/.venv, REPO/.venv-belle2) or a conda
# environment (KLIPNOTE_VENV_CUDA12=/opt/conda/envs/klipnote-cuda12).

klipnote_repo="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)"

klipnote_env() {  # klipnote_env whisperx|belle2
  case "$1" in
    whisperx)
      env_venv="${KLIPNOTE_VENV_CUDA12:-$klipnote_repo/.venv}" env_var="KLIPNOTE_VENV_CUDA12"
      env_dir="envs/cuda12" env_torch=""
      ;;
    belle2)
      env_venv="${KLIPNOTE_VENV_CUDA118:-$klipnote_repo/.venv-belle2}" env_var="KLIPNOTE_VENV_CUDA118"
      env_dir="envs/cuda118"
      env_torch=" torch==2.5.1+cu118 --extra-index-url https://download.pytorch.org/whl/cu118"
      ;;
    *) return 2 ;;
  esac
}

klipnote_env_check() {  # klipnote_env_check MODEL: one line on stderr and status 1 when it is not usable
  if [ ! -x "$env_venv/bin/python" ]; then
    echo "${0##*/}: no $1 environment at $env_venv; create it with: python3.11 -m venv $env_venv && $env_venv/bin/pip install -r $klipnote_repo/$env_dir/requirements.txt$env_torch && $env_venv/bin/pip install --no-deps -e $klipnote_repo (or set $env_var to an existing one)" >&2
    return 1
  fi
  if [ ! -x "$env_venv/bin/klipnote" ]; then
    echo "${0##*/}: klipnote is not installed in $env_venv; install it with: $env_venv/bin/pip install --no-deps -e $klipnote_repo" >&2
    return 1
  fi
}
