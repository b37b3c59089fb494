# Sourced by .ci/run. The Redis store and leadership tests start their own redis-server
# processes on free loopback ports (never a Redis already running on the machine); this only
# makes sure the binary is there (and openssl, which makes the TLS test's certificates) and
# tells the tests where it is.
_redis_packages=""
command -v redis-server >/dev/null 2>&1 || _redis_packages="redis-server"
command -v openssl >/dev/null 2>&1 || _redis_packages="$_redis_packages openssl"
if [ -n "$_redis_packages" ]; then
  echo "installing Debian packages:$_redis_packages (no service is started)"
  # Keep the package's init scripts from starting a server during the installation.
  _redis_policy_added=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    _redis_policy_added=1
  fi
  apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $_redis_packages
  if [ -n "$_redis_policy_added" ]; then
    rm -f /usr/sbin/policy-rc.d
  fi
  unset _redis_policy_added
fi
unset _redis_packages
JITSI_SCALER_REDIS_SERVER="$(command -v redis-server)"
export JITSI_SCALER_REDIS_SERVER
echo "redis-server: $JITSI_SCALER_REDIS_SERVER ($("$JITSI_SCALER_REDIS_SERVER" --version | cut -d' ' -f3))"
