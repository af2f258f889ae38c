#!/bin/sh
# nalox certificate provisioning with openssl: two CAs, broker, unit and service certificates, a CRL.
#
#   make-certs.sh DIR init [BROKER_NAME...]  server CA + device CA + broker cert (SAN localhost,
#                                            127.0.0.1 and each BROKER_NAME) + an empty CRL
#   make-certs.sh DIR unit UNIT_ID           a unit certificate, CN = UNIT_ID (the MQTT username)
#   make-certs.sh DIR service NAME           a service certificate: inventory, dashboard or operations, or
#                                            inventory-0 .. inventory-31: one per central ingest worker
#                                            (`[mqtt] workers`; the broker makes each CN a client id)
#   make-certs.sh DIR revoke NAME            revoke NAME's certificate and rewrite the CRL
#   make-certs.sh DIR crl                    rewrite the CRL (valid NALOX_CRL_DAYS, default 365 days:
#                                            past that OpenSSL refuses EVERY client, so renew early)
#
# The device CA signs only units and services (client certificates; it is the broker's `cafile`).
# The server CA signs only the broker (clients trust it to know they talk to the real broker).
# A client gets DIR/clients/NAME/{NAME.crt,NAME.key,ca.crt}; ca.crt is the server CA.
# Keys are EC P-256, mode 0600. Run it on an offline machine; never copy DIR/*-ca/ca.key to a unit.
set -eu

usage() { sed -n '3,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
DIR=$1; ACTION=$2; shift 2
DAYS=${NALOX_CERT_DAYS:-825}
CRL_DAYS=${NALOX_CRL_DAYS:-365}
umask 077

die() { echo "make-certs: $*" >&2; exit 1; }
check_name() {
  printf '%s' "$1" | grep -Eq '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$' \
    || die "expected a name of letters, digits, '_', '.', '-' (max 64, not starting with a symbol), got '$1'"
  case "$1" in inventory|inventory-[0-9]*|dashboard|operations)
    [ "${2:-}" = service ] || die "'$1' is reserved for a service certificate";; esac
}

# inventory, dashboard, operations, or a central ingest worker inventory-0 .. inventory-31 (the nalox_guard
# plugin's plugin_opt_central_workers says how many of them the broker accepts as central)
service_name() {
  case "$1" in
    inventory|dashboard|operations|inventory-[0-9]|inventory-[12][0-9]|inventory-3[01]) return 0;;
  esac
  return 1
}

device_cnf() {
  cat > "$DIR/device-ca/openssl.cnf" <<CNF
[ ca ]
default_ca = device_ca
[ device_ca ]
dir = $DIR/device-ca
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
certificate = \$dir/ca.crt
private_key = \$dir/ca.key
serial = \$dir/serial
crlnumber = \$dir/crlnumber
default_md = sha256
default_days = $DAYS
default_crl_days = $CRL_DAYS
policy = policy_cn
unique_subject = no
x509_extensions = client_ext
[ policy_cn ]
organizationName = optional
commonName = supplied
[ client_ext ]
basicConstraints = critical,CA:false
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
}

new_ca() {  # folder, common name
  mkdir -p "$DIR/$1"
  openssl ecparam -name prime256v1 -genkey -noout -out "$DIR/$1/ca.key"
  openssl req -x509 -new -sha256 -key "$DIR/$1/ca.key" -days 3650 -subj "/O=nalox/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$DIR/$1/ca.crt"
}

gen_crl() {
  openssl ca -batch -config "$DIR/device-ca/openssl.cnf" -gencrl -crldays "$CRL_DAYS" -out "$DIR/device-ca/crl.pem" 2>/dev/null
  echo "CRL: $DIR/device-ca/crl.pem (copy it to the broker and reload mosquitto)"
}

init() {
  [ ! -e "$DIR/device-ca/ca.key" ] || die "$DIR already holds a device CA; refusing to overwrite it"
  mkdir -p "$DIR/device-ca/newcerts" "$DIR/broker" "$DIR/clients"
  new_ca server-ca "nalox broker CA"
  new_ca device-ca "nalox device CA"
  : > "$DIR/device-ca/index.txt"; echo 1000 > "$DIR/device-ca/serial"; echo 1000 > "$DIR/device-ca/crlnumber"
  device_cnf
  san="DNS:localhost,IP:127.0.0.1"
  for host in "$@"; do
    case "$host" in *[!0-9.]*) san="$san,DNS:$host";; *) san="$san,IP:$host";; esac
  done
  openssl ecparam -name prime256v1 -genkey -noout -out "$DIR/broker/broker.key"
  openssl req -new -sha256 -key "$DIR/broker/broker.key" -subj "/O=nalox/CN=${1:-localhost}" \
    -out "$DIR/broker/broker.csr"
  printf 'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
    "$san" > "$DIR/broker/ext.cnf"
  openssl x509 -req -sha256 -in "$DIR/broker/broker.csr" -CA "$DIR/server-ca/ca.crt" -CAkey "$DIR/server-ca/ca.key" \
    -CAcreateserial -days "$DAYS" -extfile "$DIR/broker/ext.cnf" -out "$DIR/broker/broker.crt" 2>/dev/null
  cp "$DIR/device-ca/ca.crt" "$DIR/broker/device-ca.crt"
  gen_crl
  echo "broker: $DIR/broker/{broker.crt,broker.key,device-ca.crt} (SAN $san)"
}

client() {  # name, kind
  check_name "$1" "$2"
  out="$DIR/clients/$1"
  [ ! -e "$out/$1.crt" ] || die "$out/$1.crt exists; revoke it first to issue a new one"
  mkdir -p "$out"
  openssl ecparam -name prime256v1 -genkey -noout -out "$out/$1.key"
  openssl req -new -sha256 -key "$out/$1.key" -subj "/O=nalox/CN=$1" -out "$out/$1.csr"
  openssl ca -batch -notext -config "$DIR/device-ca/openssl.cnf" -in "$out/$1.csr" -out "$out/$1.crt" 2>/dev/null
  cp "$DIR/server-ca/ca.crt" "$out/ca.crt"
  chmod 600 "$out/$1.key"
  echo "$2 $1: $out/{$1.crt,$1.key,ca.crt}"
}

revoke() {
  crt="$DIR/clients/$1/$1.crt"
  [ -f "$crt" ] || die "expected a certificate at $crt, found none"
  openssl ca -batch -config "$DIR/device-ca/openssl.cnf" -revoke "$crt" 2>/dev/null
  mv "$crt" "$crt.revoked"
  gen_crl
}

[ "$ACTION" = init ] || [ -f "$DIR/device-ca/openssl.cnf" ] || die "expected an initialised $DIR (run: $0 $DIR init)"
DIR=$(cd "$(dirname "$DIR")" && pwd)/$(basename "$DIR")
case "$ACTION" in
  init) mkdir -p "$DIR"; init "$@";;
  unit) [ $# -eq 1 ] || usage; client "$1" unit;;
  service) [ $# -eq 1 ] || usage
    service_name "$1" || die "expected inventory, inventory-0 .. inventory-31, dashboard or operations, got '$1'"
    client "$1" service;;
  revoke) [ $# -eq 1 ] || usage; revoke "$1";;
  crl) gen_crl;;
  *) usage;;
esac
