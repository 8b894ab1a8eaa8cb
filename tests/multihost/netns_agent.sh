#!/bin/sh
# Open MPI's remote-shell agent for a virtual cluster of network namespaces (tests/multihost/netns.py).
#
# PRRTE starts its daemon (prted) on every other host by running "<agent> HOST COMMAND...", exactly as
# it would run "ssh HOST COMMAND...". This agent does what sshd would do on a real machine:
#   * enters HOST's network namespace (its own eth0 and address, so MPI traffic is real TCP over veth),
#   * enters a fresh UTS namespace and sets HOST as the hostname, so Open MPI sees a separate node
#     (MPI_COMM_TYPE_SHARED, dist_sync.local_rank, MPI_Get_processor_name),
#   * bind-mounts the cluster's hosts file over /etc/hosts (private to this mount namespace, which
#     `ip netns exec` creates), so the host names resolve without touching the real /etc,
#   * clears the environment like an ssh login does: anything the ranks need must be forwarded with
#     `mpirun -x NAME`, as on real machines (a variable set only on the launching host is a classic
#     multi-host bug this catches).
#   * joins the arguments with spaces and hands them to sh -c, as ssh does with a remote command.
#
# Usage: netns_agent.sh CLUSTER_DIR [ssh options] HOST COMMAND...
#   CLUSTER_DIR holds hosts.map ("HOSTNAME NETNS" per line) and etc_hosts. Open MPI is pointed at it
#   with PRTE_MCA_plm_ssh_agent="netns_agent.sh CLUSTER_DIR"; PRRTE splits the value at spaces.
set -eu

if [ $# -lt 3 ]; then
    echo "netns_agent.sh: usage: netns_agent.sh CLUSTER_DIR [ssh options] HOST COMMAND..." >&2
    exit 255
fi
cluster_dir=$1
shift
# ssh options PRRTE may put before the host (e.g. -x); none of them take a value here.
while [ $# -gt 0 ]; do
    case $1 in
        -*) shift ;;
        *) break ;;
    esac
done
if [ $# -lt 2 ]; then
    echo "netns_agent.sh: no command after the host name (arguments: $*)" >&2
    exit 255
fi
host=$1
shift

if [ ! -r "$cluster_dir/hosts.map" ]; then
    echo "netns_agent.sh: $cluster_dir/hosts.map not found: the virtual cluster is gone" \
         "(torn down, or never created)" >&2
    exit 255
fi
netns=$(awk -v h="$host" '$1 == h { print $2 }' "$cluster_dir/hosts.map")
if [ -z "$netns" ]; then
    echo "netns_agent.sh: '$host' is not a host of the virtual cluster in $cluster_dir" \
         "(its hosts: $(awk '{ printf "%s ", $1 }' "$cluster_dir/hosts.map"))" >&2
    exit 255
fi

exec ip netns exec "$netns" unshare --uts -- \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME="${HOME:-/root}" USER="${USER:-root}" LOGNAME="${LOGNAME:-root}" SHELL=/bin/sh LANG=C.UTF-8 \
    /bin/sh -c '
        mount --bind "$1/etc_hosts" /etc/hosts || { echo "netns_agent.sh: cannot bind-mount $1/etc_hosts over /etc/hosts on $2" >&2; exit 255; }
        hostname "$2" || { echo "netns_agent.sh: cannot set the hostname $2" >&2; exit 255; }
        shift 2
        eval "$*"' netns_agent.sh "$cluster_dir" "$host" "$@"
