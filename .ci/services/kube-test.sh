#!/usr/bin/env bash
# Sourced by .ci/run: a real kube-apiserver for the Kubernetes integration tests.
# Builds it once (cached under $JITSI_SCALER_CACHE/kube-test/bin, about 4 min cold, needs root),
# starts it unless the one recorded in $JITSI_SCALER_CACHE/kube-test.env still answers, and
# exports KUBE_TEST_SERVER, KUBE_TEST_TOKEN and KUBE_TEST_DIR for the tests.
# Stop it with: kill $(cat "$KUBE_TEST_DIR"/*.pid)

kube_test_service() {
  local cache="${JITSI_SCALER_CACHE:-$HOME/.cache/jitsi-scaler}"
  local tool bin envfile line
  tool="$(git rev-parse --show-toplevel)/../shared/tools/kube-test"
  bin="$cache/kube-test/bin"
  envfile="$cache/kube-test.env"
  if [ ! -x "$tool/build.sh" ]; then
    echo "kube-test: $tool not found (expected ../shared beside the checkout)" >&2
    return 1
  fi
  mkdir -p "$cache"
  "$tool/build.sh" "$bin" >/dev/null || return 1

  if [ -f "$envfile" ]; then
    # shellcheck source=/dev/null
    . "$envfile"
    if curl -skf -m 5 -H "Authorization: Bearer ${KUBE_TEST_TOKEN:-}" "${KUBE_TEST_SERVER:-https://127.0.0.1:1}/readyz" >/dev/null 2>&1; then
      echo "kube-test: reusing the apiserver at $KUBE_TEST_SERVER"
      return 0
    fi
  fi
  line=$("$tool/start.sh" "$bin" | tail -n 1) || return 1
  case "$line" in
    KUBE_TEST_SERVER=*) ;;
    *) echo "kube-test: unexpected start.sh output: $line" >&2; return 1 ;;
  esac
  # "KUBE_TEST_SERVER=… KUBE_TEST_TOKEN=… KUBE_TEST_DIR=…" → one export per line.
  printf 'export %s\n' $line > "$envfile"
  # shellcheck source=/dev/null
  . "$envfile"
  echo "kube-test: started the apiserver at $KUBE_TEST_SERVER"
}

kube_test_service || { echo "kube-test: setup failed" >&2; false; }
export KUBE_TEST_SERVER KUBE_TEST_TOKEN KUBE_TEST_DIR
unset -f kube_test_service
