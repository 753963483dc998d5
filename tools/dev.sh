#!/usr/bin/env bash
# The project's developer entry point: build, test, lint, demo and bench, run under CPython 3.14.
#
#   tools/dev.sh demo     build, then start a tree of actors and print what happened with timings
#   tools/dev.sh test     build, lint (with mypy), clang-tidy, then every test: C++ (ctest), the installed package,
#                         and Python (pytest, every backend)
#   tools/dev.sh build | lint | tidy | ctest | pytest [ARGS] | installed | bench [ARGS] | shell
#
# Outside the toolchain (no SUBACTOR_PYTHON set) it re-runs itself through tools/toolchain.sh, which uses
# python3.14 from PATH or a cached Debian sid root.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${SUBACTOR_PYTHON:-}" ]]; then
  exec "$repo/tools/toolchain.sh" tools/dev.sh "$@"
fi
cd "$repo"
py=$(command -v "$SUBACTOR_PYTHON")
tag=$("$py" -c 'import sys, sysconfig; print(f"{sys.implementation.cache_tag}-{sysconfig.get_platform()}")')
build="build/$tag"
export PYTHONPATH="$repo/python${PYTHONPATH:+:$PYTHONPATH}"
# Bytecode is cached under build/ (never beside the sources or in the toolchain's system directories), so an actor
# does not recompile the package at every spawn: the same as an installed package.
export PYTHONPYCACHEPREFIX="$repo/build/pycache"
unset PYTHONDONTWRITEBYTECODE

stamp() { printf '==> %s\n' "$*"; }

do_build() {
  stamp "build ($build)"
  local gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  if [[ ! -f "$build/CMakeCache.txt" ]]; then
    cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DPython_EXECUTABLE="$py" -DSUBACTOR_BUILD_TESTS=ON >/dev/null
  fi
  cmake --build "$build" -j "$(nproc)"
  # Dev builds import the extension from the source tree: link it beside the package (git ignores it).
  local so
  so=$(find "$build" -maxdepth 3 -name '_native*.so' -print -quit)
  [[ -n "$so" ]] || { echo "dev: no _native extension was built in $build" >&2; exit 1; }
  ln -sf "$repo/$so" "python/subactor/$(basename "$so")"
}

do_lint() {
  stamp lint
  ruff check python tests bench
  ruff format --check python tests bench
  # Types that reach users: the package (py.typed, the facade, the _native stub) and a typed user script.
  MYPYPATH="$repo/python" "$py" -m mypy --strict --cache-dir "$repo/build/mypy-cache" python/subactor \
    tests/typing/typed_user.py
  local cxx
  mapfile -t cxx < <(git ls-files -co --exclude-standard -- 'src/*.cpp' 'src/*.hpp' 'tests/cpp/*.cpp' 'tests/cpp/*.hpp')
  if ((${#cxx[@]})); then clang-format --dry-run -Werror "${cxx[@]}"; fi
}

do_tidy() {
  # clang-tidy (.clang-tidy) over the C++ sources and tests, one process per core, any warning fails. Needs the
  # build's compile_commands.json.
  stamp tidy
  local cxx
  mapfile -t cxx < <(git ls-files -co --exclude-standard -- 'src/*.cpp' 'tests/cpp/*.cpp')
  printf '%s\0' "${cxx[@]}" \
    | xargs -0 -n 1 -P "$(nproc)" clang-tidy -p "$build" --quiet --warnings-as-errors='*' 2>/dev/null
}

do_ctest() {
  stamp ctest
  ctest --test-dir "$build" --output-on-failure -j "$(nproc)" --timeout 300
}

do_installed() {
  # The package as users get it: `pip install .` into a throwaway venv (offline; its CMake build cached in
  # build/wheel-$tag), then checks, a smoke subset, the README's blocks and the pytest11 plugin load against the
  # installed copy, with nothing of python/ on the path.
  stamp "installed package (pip install . into a throwaway venv)"
  local tmp venv status=0
  tmp=$(mktemp -d)
  venv="$tmp/venv"
  "$py" -m venv --system-site-packages "$venv"
  "$venv/bin/python" -m pip install -q --no-build-isolation --no-deps --no-index \
    --config-settings=build-dir="$repo/build/wheel-$tag" "$repo" || status=$?
  if ((status == 0)); then
    (
      unset PYTHONPATH
      cd "$tmp"
      "$venv/bin/python" - "$venv" <<'EOF' &&
import importlib.metadata, pathlib, sys
import subactor, subactor._native
where = pathlib.Path(subactor.__file__).parent
assert where.is_relative_to(sys.argv[1]), f'subactor imported from {where}, not the venv'
assert (where / 'py.typed').is_file() and (where / '_native.pyi').is_file(), 'typing files not installed'
assert importlib.metadata.version('subactor') == subactor.__version__, subactor.__version__
plugin = [ep for ep in importlib.metadata.entry_points(group='pytest11') if ep.name == 'subactor']
assert plugin and plugin[0].load().__name__ == 'subactor._testing.plugin', plugin
print(f'installed: subactor {subactor.__version__} at {where}')
EOF
        # py.typed at work: mypy finds the installed package's types (no MYPYPATH).
        "$venv/bin/python" -m mypy --strict --no-incremental "$repo/tests/typing/typed_user.py" &&
        cd "$repo" &&
        "$venv/bin/python" -m pytest -p no:cacheprovider tests/python/test_smoke.py tests/python/test_plugin.py \
          tests/python/test_readme.py tests/python/test_broadcast.py | tee "$tmp/pytest.out" &&
        grep -q '^plugins: .*subactor-' "$tmp/pytest.out" # loaded through its pytest11 entry point
    ) || status=$?
  fi
  rm -rf "$tmp"
  return "$status"
}

do_pytest() {
  stamp "pytest $*"
  "$py" -m pytest "$@"
}

cmd=${1:-test}
shift || true
case "$cmd" in
  build) do_build ;;
  lint) do_lint ;;
  tidy) do_build; do_tidy ;;
  ctest) do_build; do_ctest ;;
  pytest) do_build; do_pytest "$@" ;;
  installed) do_installed ;;
  test)
    t0=$SECONDS
    do_build
    do_lint
    do_tidy
    do_ctest
    do_installed
    # Every backend runs the whole actor suite; the driver's own tests run once (backend-independent, and
    # their leak checks expect no warm interpreter pool around).
    failed=()
    do_pytest tests/python "$@" || failed+=(trio)
    for backend in subint mp_spawn mp_forkserver forkserver; do
      do_pytest tests/python --spawn-backend="$backend" --ignore-glob='tests/python/test_native_*' "$@" \
        || failed+=("$backend")
    done
    if ((${#failed[@]})); then
      stamp "FAILED on backend(s): ${failed[*]} ($((SECONDS - t0)) s)"
      exit 1
    fi
    stamp "all tests passed in $((SECONDS - t0)) s"
    ;;
  demo) do_build; "$py" -m subactor.demo "$@" ;;
  bench) do_build; "$py" bench/run.py "$@" ;;
  shell) do_build; exec bash ;;
  *) echo "usage: tools/dev.sh demo|test|build|lint|ctest|pytest|installed|bench|shell" >&2; exit 2 ;;
esac
