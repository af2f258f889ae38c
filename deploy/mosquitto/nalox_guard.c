/* nalox_guard: a mosquitto 2.0 plugin that enforces what the ACL file cannot (deploy/mosquitto/README.md).
 *
 * mosquitto's acl_file grants EVERY subscription (security_default.c: "FIXME - implement ACL subscription
 * strings") and filters only delivery, so a unit may join `$share/<group>/...` and steal the group's
 * messages; it cannot tell a retained publish from another, nor one topic level from many. The bundled
 * dynamic-security plugin of 2.0.11 sees `$share/...` subscriptions whole and could deny them, but it has
 * no %u/%c patterns (one role per unit to keep in step with the PKI) and no notion of retain.
 *
 * This plugin runs before the acl_file (plugins register their ACL callback first). For units and the
 * staff-command identities it only ever DENIES or DEFERS: whatever it lets through must still pass the
 * acl_file's rules. The central role is defined here, once, and answered here (granted or denied), because
 * the acl_file names users exactly and central runs one connection, hence one certificate, per ingest
 * worker:
 *
 *   - central identities: each name of plugin_opt_central (default "inventory") and, with
 *     plugin_opt_central_workers N, its ingest workers <name>-0 .. <name>-(N-1) (make-certs.sh issues
 *     them as service certificates and refuses those names for units). They read nalox/v1/#, subscribe to
 *     it (also through `$share/<group>/`), and write only acks, replay and lot-hold commands and
 *     nalox/v1/_central/#;
 *   - client id must equal the certificate CN (prod.conf sets use_username_as_clientid; this is a second
 *     line should that option ever be removed);
 *   - `$share/...` subscriptions only for the central identities;
 *   - a unit (any identity not central or operations) subscribes only to nalox/v1/<cn>/cmd/... and
 *     nalox/v1/<cn>/ack: `#` and other wide filters are refused (SUBACK 0x87), not silently filtered;
 *   - a unit publishes only on exact topics: status, state, telemetry, event/<type>, cmd_response and
 *     cmd_response/<id> (one level, [A-Za-z0-9_.-]{1,64});
 *   - retained publishes only on nalox/v1/<unit>/status and nalox/v1/<unit>/state, for everyone;
 *   - payload size limits per topic kind (plugin_opt_max_state_bytes, _max_event_bytes,
 *     _max_other_bytes).
 *
 * Build: gcc -shared -fPIC -O2 -Wall -o nalox_guard.so nalox_guard.c   (Debian: apt install mosquitto-dev
 * libmosquitto-dev). Load: `plugin /usr/lib/nalox/nalox_guard.so` in prod.conf.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define ROOT "nalox/v1/"
#define ROOT_LEN (sizeof(ROOT) - 1)
#define MAX_NAMES 8
#define MAX_WORKERS 32

/* What a central identity may publish (topic filters); it reads and subscribes to nalox/v1/#. */
static const char *const central_writes[] = {
	ROOT "+/ack", ROOT "+/cmd/replay", ROOT "+/cmd/lot_hold", ROOT "_central/#", NULL
};

static mosquitto_plugin_id_t *plugin_id;
static char *central[MAX_NAMES];
static int central_count;
static int central_workers;
static char *operations[MAX_NAMES];
static int operations_count;
static uint32_t max_state_bytes = 65536;
static uint32_t max_event_bytes = 8192;
static uint32_t max_other_bytes = 16384;

static void split_names(const char *value, char **out, int *count)
{
	char *copy = strdup(value), *save = NULL, *tok;
	*count = 0;
	for(tok = strtok_r(copy, " ,", &save); tok && *count < MAX_NAMES; tok = strtok_r(NULL, " ,", &save)){
		out[(*count)++] = strdup(tok);
	}
	free(copy);
}

static bool in_list(const char *name, char **list, int count)
{
	int i;
	for(i = 0; i < count; i++){
		if(!strcmp(name, list[i])) return true;
	}
	return false;
}

/* A central name, or <central name>-<k> with k a plain decimal below central_workers. */
static bool is_central(const char *name)
{
	int i;
	size_t n;
	const char *k;
	char *end;
	long worker;
	if(in_list(name, central, central_count)) return true;
	for(i = 0; i < central_count; i++){
		n = strlen(central[i]);
		if(strncmp(name, central[i], n) || name[n] != '-') continue;
		k = name + n + 1;
		if(k[0] < '0' || k[0] > '9' || (k[0] == '0' && k[1])) continue;  /* digits, no leading zero */
		worker = strtol(k, &end, 10);
		if(*end == '\0' && worker < central_workers) return true;
	}
	return false;
}

static bool matches(const char *filter, const char *topic)
{
	bool result = false;
	return mosquitto_topic_matches_sub(filter, topic, &result) == MOSQ_ERR_SUCCESS && result;
}

/* One topic level of [A-Za-z0-9_.-], 1..64 characters, ending at '\0'. */
static bool one_level(const char *s)
{
	size_t n = 0;
	for(; s[n]; n++){
		char c = s[n];
		if(!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-')){
			return false;
		}
	}
	return n >= 1 && n <= 64;
}

/* If topic is nalox/v1/<unit>/<rest>, return rest and set unit_len; else NULL. */
static const char *unit_part(const char *topic, const char *unit)
{
	size_t ulen = strlen(unit);
	if(strncmp(topic, ROOT, ROOT_LEN)) return NULL;
	if(strncmp(topic + ROOT_LEN, unit, ulen) || topic[ROOT_LEN + ulen] != '/') return NULL;
	return topic + ROOT_LEN + ulen + 1;
}

/* status or state of any unit: the only topics that may be retained. */
static bool retainable(const char *topic)
{
	const char *slash, *rest;
	if(strncmp(topic, ROOT, ROOT_LEN)) return false;
	slash = strchr(topic + ROOT_LEN, '/');
	if(!slash) return false;
	rest = slash + 1;
	return !strcmp(rest, "status") || !strcmp(rest, "state");
}

static int deny(const char *why, const char *username, const char *topic)
{
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "nalox_guard: denied %s for %s on %s", why, username ? username : "?", topic);
	return MOSQ_ERR_ACL_DENIED;
}

/* Central subscribes to filters under nalox/v1/, plainly or through $share/<group>/. */
static int central_subscribe(const char *username, const char *topic)
{
	const char *filter = topic, *slash;
	if(!strncmp(topic, "$share/", 7)){
		slash = strchr(topic + 7, '/');
		if(!slash || slash == topic + 7) return deny("malformed shared subscription", username, topic);
		filter = slash + 1;
	}
	if(strncmp(filter, ROOT, ROOT_LEN)) return deny("central subscription outside " ROOT, username, topic);
	return MOSQ_ERR_SUCCESS;
}

static int central_publish(const char *username, const char *topic)
{
	int i;
	for(i = 0; central_writes[i]; i++){
		if(matches(central_writes[i], topic)) return MOSQ_ERR_SUCCESS;
	}
	return deny("central publish outside acks, replay, lot_hold and _central", username, topic);
}

static int check_subscribe(const char *username, const char *topic)
{
	const char *rest;
	if(is_central(username)) return central_subscribe(username, topic);
	if(!strncmp(topic, "$share/", 7)) return deny("shared subscription", username, topic);
	if(in_list(username, operations, operations_count)){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	rest = unit_part(topic, username);
	if(rest && (!strcmp(rest, "ack") || !strncmp(rest, "cmd/", 4))){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	return deny("subscription outside its own cmd/ and ack", username, topic);
}

static int check_publish(const char *username, const char *topic, uint32_t payloadlen, bool retain)
{
	const char *rest;
	uint32_t limit = max_other_bytes;
	if(retain && !retainable(topic)){
		return deny("retained publish (only status and state may be retained)", username, topic);
	}
	if(is_central(username)) return central_publish(username, topic);
	if(in_list(username, operations, operations_count)){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	rest = unit_part(topic, username);
	if(!rest) return deny("publish outside its own topics", username, topic);
	if(!strcmp(rest, "state")){
		limit = max_state_bytes;
	}else if(!strncmp(rest, "event/", 6) && one_level(rest + 6)){
		limit = max_event_bytes;
	}else if(!strcmp(rest, "status") || !strcmp(rest, "telemetry") || !strcmp(rest, "cmd_response")
			|| (!strncmp(rest, "cmd_response/", 13) && one_level(rest + 13))){
		limit = max_other_bytes;
	}else{
		return deny("publish on a topic that is not one of a unit's exact topics", username, topic);
	}
	if(payloadlen > limit) return deny("oversized payload", username, topic);
	return MOSQ_ERR_PLUGIN_DEFER;
}

static int acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	const char *username = mosquitto_client_username(ed->client);
	const char *client_id = mosquitto_client_id(ed->client);
	(void)event;
	(void)userdata;

	if(!username || !client_id) return deny("client without certificate identity", username, ed->topic);
	if(strcmp(username, client_id)) return deny("client id not equal to certificate identity", username, ed->topic);
	switch(ed->access){
		case MOSQ_ACL_SUBSCRIBE:
			return check_subscribe(username, ed->topic);
		case MOSQ_ACL_WRITE:
			return check_publish(username, ed->topic, ed->payloadlen, ed->retain);
		case MOSQ_ACL_READ:
			if(!is_central(username)) return MOSQ_ERR_PLUGIN_DEFER;
			return matches(ROOT "#", ed->topic) ? MOSQ_ERR_SUCCESS : deny("central read outside " ROOT, username, ed->topic);
		default:
			return MOSQ_ERR_PLUGIN_DEFER;
	}
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;
	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **user_data, struct mosquitto_opt *opts, int opt_count)
{
	int i;
	(void)user_data;
	plugin_id = identifier;
	split_names("inventory", central, &central_count);
	split_names("operations", operations, &operations_count);
	for(i = 0; i < opt_count; i++){
		if(!strcmp(opts[i].key, "central")){
			split_names(opts[i].value, central, &central_count);
		}else if(!strcmp(opts[i].key, "central_workers")){
			central_workers = (int)strtol(opts[i].value, NULL, 10);
			if(central_workers < 0 || central_workers > MAX_WORKERS){
				mosquitto_log_printf(MOSQ_LOG_ERR, "nalox_guard: central_workers: expected 0..%d, got %s",
						MAX_WORKERS, opts[i].value);
				return MOSQ_ERR_INVAL;
			}
		}else if(!strcmp(opts[i].key, "operations")){
			split_names(opts[i].value, operations, &operations_count);
		}else if(!strcmp(opts[i].key, "max_state_bytes")){
			max_state_bytes = (uint32_t)strtoul(opts[i].value, NULL, 10);
		}else if(!strcmp(opts[i].key, "max_event_bytes")){
			max_event_bytes = (uint32_t)strtoul(opts[i].value, NULL, 10);
		}else if(!strcmp(opts[i].key, "max_other_bytes")){
			max_other_bytes = (uint32_t)strtoul(opts[i].value, NULL, 10);
		}else{
			mosquitto_log_printf(MOSQ_LOG_ERR, "nalox_guard: unknown option %s", opts[i].key);
			return MOSQ_ERR_INVAL;
		}
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "nalox_guard: loaded (central %s with %d ingest workers; state<=%u, "
			"event<=%u, other<=%u bytes)", central_count ? central[0] : "-", central_workers,
			max_state_bytes, max_event_bytes, max_other_bytes);
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, acl_check, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *user_data, struct mosquitto_opt *opts, int opt_count)
{
	(void)user_data;
	(void)opts;
	(void)opt_count;
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, acl_check, NULL);
}
