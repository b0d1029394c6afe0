#!/usr/bin/env bash
# Real mail server (Postfix + Dovecot) on loopback, for tests.
#
# Everything of one instance (config, queue, state, sockets, logs, pid files,
# Maildirs, TLS material) lives under one directory, so several instances can
# run side by side with different directories and ports. Run `--help` for use.
set -euo pipefail
umask 022

PROG=${0##*/}

usage() {
	cat <<EOF
Usage: $PROG install|start|stop|status|env
       $PROG --help

Runs a real Postfix + Dovecot pair on 127.0.0.1 for tests (Debian, as root).

Commands:
  install  Install Debian's postfix, dovecot-core, dovecot-imapd, dovecot-lmtpd,
           openssl, ca-certificates (non-interactively, no system-wide daemons
           started) and create the 'vmail' system user. Quick when done already.
  start    Write the instance's configuration under \$REAL_MAIL_DIR and start
           Dovecot then Postfix; returns once both answer with real greetings
           and Dovecot knows every user. Restarts an instance already running
           in that directory. Mail already delivered there is kept.
  stop     Stop the instance's daemons (by their pid files) and wait for them.
  status   Say what runs; exit status 0 only if both daemons run.
  env      Print 'export' lines for tests:  eval "\$($PROG env)"

Settings (environment):
  REAL_MAIL_DIR         instance directory (default /tmp/rms). Keep it short
                        (unix sockets live below it; at most 60 bytes) and
                        outside /root (users vmail and postfix must enter it).
  REAL_SMTP_PORT        SMTP, STARTTLS offered, AUTH PLAIN/LOGIN (default 10025)
  REAL_SUBMISSION_PORT  SMTP over implicit TLS, AUTH required (default 10465)
  REAL_IMAP_PORT        IMAP, STARTTLS offered (default 10143)
  REAL_IMAPS_PORT       IMAP over implicit TLS (default 10993)
  REAL_MAIL_USERS       space-separated name@domain:password (default: alice,
                        bob, issuer-jpy, issuer-usd, agent and user1..user8,
                        all @example.test, password NAME-pw or pw; plus
                        pool1..pool64@example.test, password NAME-pw, the pool
                        that testmail::harness claims test accounts from)
  REAL_MAIL_TIMEOUT     seconds to wait for the daemons (default 30)

Tests using testmail::harness claim pool accounts by locking files in
\$REAL_MAIL_DIR/claims/ (the kernel drops a lock when its process ends).

TLS: a throwaway CA signs the servers' certificate (SAN localhost, 127.0.0.1,
::1); tests trust \$REAL_MAIL_DIR/ca.pem. Logs are in \$REAL_MAIL_DIR/log/.
Mail for the users' domains is accepted from anyone on loopback and delivered
over LMTP to Dovecot; mail for any other domain is refused (no relaying).
EOF
}

DEFAULT_USERS="alice@example.test:alice-pw bob@example.test:bob-pw"
DEFAULT_USERS+=" issuer-jpy@example.test:issuer-jpy-pw issuer-usd@example.test:issuer-usd-pw"
DEFAULT_USERS+=" agent@example.test:agent-pw"
for _i in 1 2 3 4 5 6 7 8; do DEFAULT_USERS+=" user$_i@example.test:pw"; done
# The pool that testmail's harness (testmail::harness) claims accounts from,
# one per test, so that parallel tests and test processes never share one.
for ((_i = 1; _i <= 64; _i++)); do DEFAULT_USERS+=" pool$_i@example.test:pool$_i-pw"; done
unset _i

PACKAGES=(postfix dovecot-core dovecot-imapd dovecot-lmtpd openssl ca-certificates)

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

need_root() {
	[[ $(id -u) -eq 0 ]] || die "'$1' must run as root"
}

# ---------------------------------------------------------------- settings

load_settings() {
	DIR=${REAL_MAIL_DIR:-/tmp/rms}
	SMTP_PORT=${REAL_SMTP_PORT:-10025}
	SUBMISSION_PORT=${REAL_SUBMISSION_PORT:-10465}
	IMAP_PORT=${REAL_IMAP_PORT:-10143}
	IMAPS_PORT=${REAL_IMAPS_PORT:-10993}
	USERS=${REAL_MAIL_USERS:-$DEFAULT_USERS}
	TIMEOUT=${REAL_MAIL_TIMEOUT:-30}
	set_paths
}

set_paths() {
	CA_PEM=$DIR/ca.pem
	TLS_DIR=$DIR/tls
	LOG_DIR=$DIR/log
	PF_ETC=$DIR/postfix/etc
	PF_SPOOL=$DIR/postfix/spool
	PF_LIB=$DIR/postfix/lib
	DC_DIR=$DIR/dovecot
	DC_CONF=$DC_DIR/dovecot.conf
	DC_RUN=$DC_DIR/run
	DC_STATE=$DC_DIR/state
	MAIL_ROOT=$DIR/mail
	INSTANCE_ENV=$DIR/instance.env
	PF_PIDFILE=$PF_SPOOL/pid/master.pid
	DC_PIDFILE=$DC_RUN/master.pid
}

# The settings an instance was started with, so that stop/status/env describe
# what actually runs there.
load_instance_settings() {
	load_settings
	[[ -r $DIR/instance.env ]] || return 0
	local key value
	while IFS='=' read -r key value; do
		case $key in
		RMS_DIR) DIR=$value ;;
		RMS_SMTP_PORT) SMTP_PORT=$value ;;
		RMS_SUBMISSION_PORT) SUBMISSION_PORT=$value ;;
		RMS_IMAP_PORT) IMAP_PORT=$value ;;
		RMS_IMAPS_PORT) IMAPS_PORT=$value ;;
		RMS_USERS) USERS=$value ;;
		*) ;;
		esac
	done <"$DIR/instance.env"
	set_paths
}

validate_settings() {
	[[ $DIR == /* ]] || die "REAL_MAIL_DIR must be an absolute path (got '$DIR')"
	[[ $DIR =~ ^[A-Za-z0-9._/-]+$ ]] ||
		die "REAL_MAIL_DIR may only contain letters, digits and . _ / - (got '$DIR')"
	DIR=${DIR%/}
	[[ -n $DIR ]] || die "REAL_MAIL_DIR must not be /"
	# Unix socket paths are limited to 108 bytes; Dovecot's longest sit about
	# 40 bytes below REAL_MAIL_DIR.
	((${#DIR} <= 60)) || die "REAL_MAIL_DIR is ${#DIR} bytes long; keep it at most 60 (unix socket paths are limited to 108 bytes)"
	case $DIR in /root | /root/*) die "REAL_MAIL_DIR must not be under /root (users vmail and postfix must enter it)" ;; esac
	set_paths

	local p seen=" "
	for p in "$SMTP_PORT" "$SUBMISSION_PORT" "$IMAP_PORT" "$IMAPS_PORT"; do
		if ! [[ $p =~ ^[0-9]+$ ]] || ((p < 1 || p > 65535)); then die "bad port '$p'"; fi
		[[ $seen != *" $p "* ]] || die "port $p is given twice"
		seen+="$p "
	done
	if ! [[ $TIMEOUT =~ ^[0-9]+$ ]] || ((TIMEOUT == 0)); then die "bad REAL_MAIL_TIMEOUT '$TIMEOUT'"; fi

	USER_NAMES=() USER_PASSWORDS=() DOMAINS=()
	local entry name pw domain d found
	local -a entries
	read -r -a entries <<<"$USERS"
	((${#entries[@]} > 0)) || die "REAL_MAIL_USERS is empty"
	for entry in "${entries[@]}"; do
		[[ $entry == *:* ]] || die "REAL_MAIL_USERS entry '$entry' is not name@domain:password"
		name=${entry%%:*} pw=${entry#*:}
		name=${name,,}
		[[ $name =~ ^[a-z0-9._+-]+@[a-z0-9.-]+$ ]] ||
			die "bad user name '$name' in REAL_MAIL_USERS (want name@domain, letters, digits, . _ + -)"
		[[ -n $pw && $pw != *:* ]] || die "password of '$name' must be non-empty and contain no ':'"
		for d in "${USER_NAMES[@]}"; do [[ $d != "$name" ]] || die "user '$name' is given twice"; done
		USER_NAMES+=("$name") USER_PASSWORDS+=("$pw")
		domain=${name#*@} found=0
		for d in "${DOMAINS[@]}"; do [[ $d != "$domain" ]] || found=1; done
		((found)) || DOMAINS+=("$domain")
	done
}

# ------------------------------------------------------------------ install

pkg_installed() {
	[[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

cmd_install() {
	need_root install
	local -a missing=()
	local p
	for p in "${PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
	if ((${#missing[@]})); then
		log "installing ${missing[*]}"
		local made_policy=0
		if [[ ! -e /usr/sbin/policy-rc.d ]]; then
			# Keep the packages' scripts from starting system-wide daemons.
			printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
			chmod 755 /usr/sbin/policy-rc.d
			made_policy=1
			trap 'rm -f /usr/sbin/policy-rc.d' EXIT
		fi
		echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -q
		apt-get install -y -q --no-install-recommends \
			-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
			"${PACKAGES[@]}"
		if ((made_policy)); then
			rm -f /usr/sbin/policy-rc.d
			trap - EXIT
		fi
	else
		log "packages already installed: ${PACKAGES[*]}"
	fi
	if ! getent passwd vmail >/dev/null; then
		getent group vmail >/dev/null || groupadd --system vmail
		useradd --system --gid vmail --home-dir /nonexistent --no-create-home \
			--shell /usr/sbin/nologin --comment "virtual mail (testmail)" vmail
		log "created system user vmail"
	fi
	log "install done"
}

check_installed() {
	local c
	export PATH=$PATH:/usr/sbin:/sbin
	for c in postfix postconf dovecot doveadm openssl; do
		command -v "$c" >/dev/null ||
			die "'$c' not found: run '$PROG install' first"
	done
	for c in vmail postfix dovecot dovenull; do
		getent passwd "$c" >/dev/null || die "system user '$c' missing: run '$PROG install' first"
	done
	[[ -x /usr/lib/dovecot/lmtp && -x /usr/lib/dovecot/imap ]] ||
		die "dovecot-imapd/dovecot-lmtpd missing: run '$PROG install' first"
}

# ---------------------------------------------------------------- processes

# Is $1 a live process whose command name is $2 and that belongs to this
# instance (its command line or environment names this instance's config)?
pid_is_ours() {
	local pid=$1 comm=$2 mark=$3 c=""
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	{ read -r c <"/proc/$pid/comm"; } 2>/dev/null || return 1
	[[ $c == "$comm" ]] || return 1
	# Dovecot's command line names its config; Postfix's master gets it in
	# MAIL_CONFIG. (Read first, then match: no early-closing pipe.)
	local cmdline environ
	cmdline=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null) || true
	environ=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null) || true
	grep -qxF -e "$mark" -e "MAIL_CONFIG=$mark" <<<"$cmdline"$'\n'"$environ"
}

read_pidfile() {
	local f=$1 pid=""
	if [[ -r $f ]]; then read -r pid <"$f" || true; fi
	pid=${pid//[[:space:]]/}
	printf '%s' "$pid"
}

postfix_pid() {
	local pid
	pid=$(read_pidfile "$PF_PIDFILE")
	pid_is_ours "$pid" master "$PF_ETC" && printf '%s' "$pid"
}

dovecot_pid() {
	local pid
	pid=$(read_pidfile "$DC_PIDFILE")
	pid_is_ours "$pid" dovecot "$DC_CONF" && printf '%s' "$pid"
}

# Processes in process group $1 (both masters lead their own group).
group_alive() {
	local pg=$1 f s
	local -a fields
	for f in /proc/[0-9]*/stat; do
		# (The process may vanish between the glob and the read.)
		{ read -r s <"$f"; } 2>/dev/null || continue
		s=${s##*) }
		read -r -a fields <<<"$s"
		[[ ${fields[2]:-} == "$pg" ]] && return 0
	done
	return 1
}

# Stop this instance's masters (found by pid file) and wait until they and
# their process groups (each master leads its own) are gone. Both get TERM at
# once: Dovecot's shutdown waits for Postfix's clients to let go anyway.
stop_instance() {
	local pid i
	local -a pids=() what=()
	if pid=$(postfix_pid); then pids+=("$pid") what+=("postfix (pid $pid)"); fi
	if pid=$(dovecot_pid); then pids+=("$pid") what+=("dovecot (pid $pid)"); fi
	((${#pids[@]})) || return 1
	log "stopping ${what[*]}"
	kill -TERM "${pids[@]}" 2>/dev/null || true
	for ((i = 0; i < 200; i++)); do
		all_gone "${pids[@]}" && return 0
		if ((i == 100)); then
			log "still running after 10 s: sending TERM to process groups ${pids[*]}"
			for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
		elif ((i == 150)); then
			log "still running after 15 s: sending KILL to process groups ${pids[*]}"
			for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
		fi
		sleep 0.1
	done
	die "processes of groups ${pids[*]} would not go away"
}

all_gone() {
	local pid
	for pid in "$@"; do
		! kill -0 "$pid" 2>/dev/null || return 1
		! group_alive "$pid" || return 1
	done
}

# ------------------------------------------------------------------ probing

port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Connect to 127.0.0.1:$1 in clear text and check that the first line starts
# with $2; then say $3 and hang up.
plain_greeting() {
	local port=$1 want=$2 bye=$3 fd line=""
	# (Braces: a redirection on exec itself would stay for the whole script.)
	{ exec {fd}<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
	IFS= read -r -t 5 line <&"$fd" || true
	{ printf '%s\r\n' "$bye" >&"$fd"; } 2>/dev/null || true
	exec {fd}>&-
	[[ $line == "$want"* ]]
}

# Same over implicit TLS, checking the certificate against our CA and IP SAN.
tls_greeting() {
	local port=$1 want=$2 line="" ok=1
	coproc TLSPROBE {
		exec timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername localhost \
			-CAfile "$CA_PEM" -verify_return_error -verify_ip 127.0.0.1 -quiet 2>/dev/null
	}
	# shellcheck disable=SC2154 # set by coproc
	local probe_pid=$TLSPROBE_PID
	if IFS= read -r -t 8 line <&"${TLSPROBE[0]}"; then
		[[ $line == "$want"* ]] && ok=0
	fi
	kill -TERM "$probe_pid" 2>/dev/null || true
	wait "$probe_pid" 2>/dev/null || true
	return "$ok"
}

show_logs() {
	local f
	for f in "$LOG_DIR"/dovecot.log "$LOG_DIR"/dovecot.out "$LOG_DIR"/postfix.log "$LOG_DIR"/postfix.out; do
		[[ -s $f ]] || continue
		printf -- '----- last lines of %s\n' "$f" >&2
		tail -n 25 "$f" >&2
	done
}

fail_start() {
	log "error: $*"
	show_logs
	log "stopping what was started"
	stop_instance || true
	exit 1
}

# Wait until command "$@" succeeds, up to $TIMEOUT seconds.
wait_for() {
	local deadline=$((SECONDS + TIMEOUT))
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
}

# ---------------------------------------------------------------------- TLS

make_tls() {
	mkdir -p "$TLS_DIR"
	chmod 700 "$TLS_DIR"
	if [[ -s $CA_PEM && -s $TLS_DIR/server.pem && -s $TLS_DIR/server.key ]] &&
		openssl verify -CAfile "$CA_PEM" "$TLS_DIR/server.pem" >/dev/null 2>&1 &&
		openssl x509 -checkend 86400 -noout -in "$TLS_DIR/server.pem" >/dev/null 2>&1; then
		return 0
	fi
	log "making a throwaway CA and server certificate"
	local tmp=$TLS_DIR/tmp
	rm -rf "$tmp"
	mkdir -m 700 "$tmp"
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/ca.key" 2>/dev/null
	openssl req -x509 -new -key "$tmp/ca.key" -sha256 -days 3650 \
		-subj "/O=testmail/CN=testmail throwaway CA $(date -u +%Y%m%dT%H%M%SZ)" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-addext "subjectKeyIdentifier=hash" \
		-out "$tmp/ca.pem"
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/server.key" 2>/dev/null
	openssl req -new -key "$tmp/server.key" -subj "/O=testmail/CN=localhost" -out "$tmp/server.csr"
	cat >"$tmp/server.ext" <<-'EOF'
		basicConstraints = critical, CA:FALSE
		keyUsage = critical, digitalSignature
		extendedKeyUsage = serverAuth
		subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
		subjectKeyIdentifier = hash
		authorityKeyIdentifier = keyid
	EOF
	openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
		-set_serial "0x$(openssl rand -hex 16)" -sha256 -days 3650 \
		-extfile "$tmp/server.ext" -out "$tmp/server.pem" 2>/dev/null
	openssl verify -CAfile "$tmp/ca.pem" "$tmp/server.pem" >/dev/null
	mv "$tmp/ca.key" "$TLS_DIR/ca.key"
	mv "$tmp/server.key" "$TLS_DIR/server.key"
	mv "$tmp/server.pem" "$TLS_DIR/server.pem"
	cat "$TLS_DIR/server.pem" "$tmp/ca.pem" >"$TLS_DIR/chain.pem"
	cp "$tmp/ca.pem" "$TLS_DIR/ca.pem"
	mv "$tmp/ca.pem" "$CA_PEM"
	chmod 600 "$TLS_DIR"/*.key
	chmod 644 "$CA_PEM" "$TLS_DIR"/*.pem
	rm -rf "$tmp"
}

# ------------------------------------------------------------------- config

write_dovecot_config() {
	local vmail_uid
	vmail_uid=$(id -u vmail)
	mkdir -p "$DC_DIR" "$DC_STATE" "$DC_RUN"
	chmod 755 "$DC_DIR" "$DC_RUN"

	local users_tmp=$DC_DIR/users.tmp i
	: >"$users_tmp"
	chmod 640 "$users_tmp"
	chgrp dovecot "$users_tmp"
	for i in "${!USER_NAMES[@]}"; do
		printf '%s:{PLAIN}%s::::::\n' "${USER_NAMES[$i]}" "${USER_PASSWORDS[$i]}" >>"$users_tmp"
	done
	mv -f "$users_tmp" "$DC_DIR/users"

	cat >"$DC_CONF" <<EOF
# Written by testmail/real-server.sh; rewritten on every start.
base_dir = $DC_RUN
state_dir = $DC_STATE
instance_name = dovecot-rms-$IMAP_PORT
listen = 127.0.0.1
protocols = imap lmtp
log_path = $LOG_DIR/dovecot.log
info_log_path = $LOG_DIR/dovecot.log
debug_log_path = $LOG_DIR/dovecot.log
auth_verbose = yes

ssl = yes
ssl_cert = <$TLS_DIR/chain.pem
ssl_key = <$TLS_DIR/server.key
ssl_min_protocol = TLSv1.2

# Tests log in over loopback, with and without TLS.
disable_plaintext_auth = no
auth_mechanisms = plain login
# No slowdown after a wrong password (tests try wrong ones on purpose).
auth_failure_delay = 0

first_valid_uid = $vmail_uid
mail_home = $MAIL_ROOT/%d/%n
mail_location = maildir:~/Maildir

passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DC_DIR/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $DC_DIR/users
  default_fields = uid=vmail gid=vmail home=$MAIL_ROOT/%d/%n
}

namespace inbox {
  inbox = yes
  mailbox Drafts {
    special_use = \\Drafts
  }
  mailbox Sent {
    special_use = \\Sent
  }
  mailbox Trash {
    special_use = \\Trash
  }
  mailbox Junk {
    special_use = \\Junk
  }
}

protocol imap {
  # Tests open many connections per user at once.
  mail_max_userip_connections = 1000
}

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $IMAPS_PORT
    ssl = yes
  }
  # One long-lived login process serves many clients: quick logins, and TLS
  # connections do not each hold a process.
  service_count = 0
  process_min_avail = 2
  client_limit = 1000
}

service imap {
  process_limit = 1024
}

service lmtp {
  unix_listener lmtp {
    mode = 0600
    user = postfix
    group = postfix
  }
}

service auth {
  unix_listener auth-postfix {
    mode = 0600
    user = postfix
    group = postfix
  }
}

# No auth penalty: after one wrong password Dovecot would otherwise slow down
# every later login from 127.0.0.1 by seconds.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
EOF
	chmod 644 "$DC_CONF"
}

write_postfix_config() {
	mkdir -p "$PF_ETC" "$PF_SPOOL" "$PF_LIB"
	chown root:root "$DIR/postfix" "$PF_ETC" "$PF_SPOOL"
	chmod 755 "$DIR/postfix" "$PF_ETC" "$PF_SPOOL"
	chown postfix:postfix "$PF_LIB"
	chmod 700 "$PF_LIB"

	local u d
	{
		for u in "${USER_NAMES[@]}"; do printf '%s OK\n' "$u"; done
	} >"$PF_ETC/vmailbox"
	{
		for d in "${DOMAINS[@]}"; do printf '%s OK\n' "$d"; done
	} >"$PF_ETC/vdomains"

	cat >"$PF_ETC/main.cf" <<EOF
# Written by testmail/real-server.sh; rewritten on every start.
compatibility_level = 3.6
queue_directory = $PF_SPOOL
data_directory = $PF_LIB
mail_owner = postfix
setgid_group = postdrop

myhostname = mail.${DOMAINS[0]}
mydomain = ${DOMAINS[0]}
myorigin = \$myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8 [::1]/128
smtpd_banner = \$myhostname ESMTP
# Treat loopback clients like any other SMTP client: no Date:, Message-ID:
# or From: added, no header addresses rewritten, so that what is stored is
# what was sent (plus the trace headers Postfix and Dovecot prepend), as on
# the embedded server and as for mail from another MTA.
local_header_rewrite_clients =

# No syslog here: log to a file through the postlog service.
maillog_file = $LOG_DIR/postfix.log
maillog_file_prefixes = $LOG_DIR

# Only the test users' domains; everything else is refused or bounced.
virtual_mailbox_domains = texthash:$PF_ETC/vdomains
virtual_mailbox_maps = texthash:$PF_ETC/vmailbox
virtual_transport = lmtp:unix:$DC_RUN/lmtp
default_transport = error:no mail leaves this test server
relay_transport = error:no mail leaves this test server
smtpd_relay_restrictions = reject_unauth_destination

# Speed: no DNS, no throttling, no sleeping after client errors.
smtpd_peername_lookup = no
smtp_host_lookup = native
disable_dns_lookups = yes
in_flow_delay = 0
smtpd_error_sleep_time = 0
queue_run_delay = 10s
minimal_backoff_time = 10s
maximal_backoff_time = 60s

# TLS: STARTTLS offered on the SMTP port; implicit TLS on submission.
smtpd_tls_chain_files = $TLS_DIR/server.key, $TLS_DIR/chain.pem
smtpd_tls_security_level = may
smtpd_tls_auth_only = no
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_loglevel = 0
smtpd_tls_received_header = yes

# SMTP AUTH (PLAIN, LOGIN) through Dovecot.
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = $DC_RUN/auth-postfix
smtpd_sasl_security_options = noanonymous
EOF

	cat >"$PF_ETC/master.cf" <<EOF
# Written by testmail/real-server.sh; rewritten on every start. No chroot.
# service    type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:$SMTP_PORT inet n - n - - smtpd
127.0.0.1:$SUBMISSION_PORT inet n - n - - smtpd
  -o syslog_name=postfix/submissions
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=reject_unauth_destination
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
tlsmgr     unix  -       -       n       1000?   1       tlsmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
lmtp       unix  -       -       n       -       -       lmtp
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
EOF
	chmod 644 "$PF_ETC"/main.cf "$PF_ETC"/master.cf "$PF_ETC"/vmailbox "$PF_ETC"/vdomains
}

write_instance_env() {
	local i users=""
	for i in "${!USER_NAMES[@]}"; do users+="${users:+ }${USER_NAMES[$i]}:${USER_PASSWORDS[$i]}"; done
	USERS=$users
	{
		echo "# Written by testmail/real-server.sh: what this instance was started with."
		echo "RMS_DIR=$DIR"
		echo "RMS_SMTP_PORT=$SMTP_PORT"
		echo "RMS_SUBMISSION_PORT=$SUBMISSION_PORT"
		echo "RMS_IMAP_PORT=$IMAP_PORT"
		echo "RMS_IMAPS_PORT=$IMAPS_PORT"
		echo "RMS_USERS=$USERS"
	} >"$INSTANCE_ENV.tmp"
	mv -f "$INSTANCE_ENV.tmp" "$INSTANCE_ENV"
}

# -------------------------------------------------------------------- start

check_enterable() {
	local who
	for who in vmail postfix dovecot; do
		runuser -u "$who" -- test -x "$DIR" ||
			die "user '$who' cannot enter $DIR: every parent folder must be enterable (o+x) by it"
	done
}

cmd_start() {
	need_root start
	check_installed
	load_settings
	validate_settings

	if [[ -d $DIR ]] && { postfix_pid >/dev/null || dovecot_pid >/dev/null; }; then
		log "an instance is already running in $DIR: restarting it"
		stop_instance || true
	fi
	local p
	for p in "$SMTP_PORT" "$SUBMISSION_PORT" "$IMAP_PORT" "$IMAPS_PORT"; do
		! port_in_use "$p" || die "port 127.0.0.1:$p is already in use by another program"
	done

	if [[ ! -e $DIR ]]; then
		mkdir -p "$(dirname "$DIR")"
		mkdir -m 755 "$DIR"
	elif [[ ! -d $DIR ]]; then
		die "$DIR exists and is not a directory"
	elif [[ ! -e $INSTANCE_ENV && -n $(ls -A "$DIR") ]]; then
		die "$DIR is not empty and holds no instance of this script: choose another REAL_MAIL_DIR"
	fi
	check_enterable
	mkdir -p "$LOG_DIR" "$MAIL_ROOT" "$DIR/claims"
	chmod 755 "$LOG_DIR"
	# testmail::harness's claims on pool accounts (flock'ed files), open to
	# test runs by any user.
	chmod 1777 "$DIR/claims"
	chown vmail:vmail "$MAIL_ROOT"
	chmod 750 "$MAIL_ROOT"

	make_tls
	write_dovecot_config
	write_postfix_config
	write_instance_env

	# Dovecot: nothing of it runs here now, so clear stale sockets (a stale
	# anvil-auth-penalty socket in particular) and pid files.
	rm -rf "${DC_RUN:?}"/*
	rm -f "$PF_PIDFILE"
	# The daemons' stdout/stderr of this start only (their logs accumulate).
	: >"$LOG_DIR/dovecot.out"
	: >"$LOG_DIR/postfix.out"

	local t0=${EPOCHREALTIME/./}
	log "starting dovecot (IMAP 127.0.0.1:$IMAP_PORT, IMAPS 127.0.0.1:$IMAPS_PORT)"
	dovecot -c "$DC_CONF" </dev/null >>"$LOG_DIR/dovecot.out" 2>&1 ||
		fail_start "dovecot would not start"
	wait_for plain_greeting "$IMAP_PORT" "* OK" "a LOGOUT" ||
		fail_start "no '* OK' greeting on IMAP 127.0.0.1:$IMAP_PORT within ${TIMEOUT}s"
	wait_for tls_greeting "$IMAPS_PORT" "* OK" ||
		fail_start "no '* OK' greeting over TLS (trusting $CA_PEM) on IMAPS 127.0.0.1:$IMAPS_PORT within ${TIMEOUT}s"
	wait_for test -S "$DC_RUN/lmtp" || fail_start "dovecot's LMTP socket $DC_RUN/lmtp did not appear"
	# One doveadm call for all users (it fails if any is unknown): one call
	# per user costs about 15 ms each, a second for the pool.
	if ! wait_for doveadm -c "$DC_CONF" user "${USER_NAMES[@]}" >/dev/null 2>&1; then
		local u
		for u in "${USER_NAMES[@]}"; do
			doveadm -c "$DC_CONF" user "$u" >/dev/null 2>&1 ||
				fail_start "dovecot does not know user $u (doveadm user)"
		done
		fail_start "doveadm user fails for the users of REAL_MAIL_USERS"
	fi

	log "starting postfix (SMTP 127.0.0.1:$SMTP_PORT, submission over TLS 127.0.0.1:$SUBMISSION_PORT)"
	postfix -c "$PF_ETC" start </dev/null >>"$LOG_DIR/postfix.out" 2>&1 ||
		fail_start "postfix would not start"
	wait_for plain_greeting "$SMTP_PORT" "220 " "QUIT" ||
		fail_start "no '220' greeting on SMTP 127.0.0.1:$SMTP_PORT within ${TIMEOUT}s"
	wait_for tls_greeting "$SUBMISSION_PORT" "220 " ||
		fail_start "no '220' greeting over TLS (trusting $CA_PEM) on 127.0.0.1:$SUBMISSION_PORT within ${TIMEOUT}s"
	postfix_pid >/dev/null || fail_start "postfix answers but its master pid file is wrong"
	dovecot_pid >/dev/null || fail_start "dovecot answers but its master pid file is wrong"

	log "ready in $(((${EPOCHREALTIME/./} - t0) / 1000)) ms: ${#USER_NAMES[@]} users in ${DOMAINS[*]}; CA $CA_PEM; logs $LOG_DIR"
}

# ----------------------------------------------------------- stop / status

cmd_stop() {
	need_root stop
	load_instance_settings
	if stop_instance; then
		log "stopped the instance in $DIR"
	else
		log "nothing of ours runs in $DIR"
	fi
}

cmd_status() {
	load_instance_settings
	local pid running=0
	echo "real mail server in $DIR:"
	if pid=$(postfix_pid); then
		echo "  postfix: running (pid $pid), SMTP 127.0.0.1:$SMTP_PORT, submission (implicit TLS) 127.0.0.1:$SUBMISSION_PORT"
		running=$((running + 1))
	else
		echo "  postfix: not running"
	fi
	if pid=$(dovecot_pid); then
		echo "  dovecot: running (pid $pid), IMAP 127.0.0.1:$IMAP_PORT, IMAPS 127.0.0.1:$IMAPS_PORT"
		running=$((running + 1))
	else
		echo "  dovecot: not running"
	fi
	((running == 2))
}

cmd_env() {
	load_instance_settings
	local name value
	for name in TESTMAIL_SERVER REAL_MAIL_DIR REAL_SMTP_ADDR REAL_IMAP_ADDR REAL_IMAPS_ADDR \
		REAL_SUBMISSION_ADDR REAL_MAIL_CA REAL_MAIL_USERS; do
		case $name in
		TESTMAIL_SERVER) value=real ;;
		REAL_MAIL_DIR) value=$DIR ;;
		REAL_SMTP_ADDR) value=127.0.0.1:$SMTP_PORT ;;
		REAL_IMAP_ADDR) value=127.0.0.1:$IMAP_PORT ;;
		REAL_IMAPS_ADDR) value=127.0.0.1:$IMAPS_PORT ;;
		REAL_SUBMISSION_ADDR) value=127.0.0.1:$SUBMISSION_PORT ;;
		REAL_MAIL_CA) value=$CA_PEM ;;
		REAL_MAIL_USERS) value=$USERS ;;
		esac
		printf 'export %s=%q\n' "$name" "$value"
	done
}

# --------------------------------------------------------------------- main

main() {
	case ${1:-} in
	install) cmd_install ;;
	start) cmd_start ;;
	stop) cmd_stop ;;
	status) cmd_status ;;
	env) cmd_env ;;
	-h | --help | help) usage ;;
	"")
		usage >&2
		exit 2
		;;
	*)
		log "unknown command '$1'"
		usage >&2
		exit 2
		;;
	esac
}

main "$@"
