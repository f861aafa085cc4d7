set -e
nm=$(dirname "$1")/nm
names=$("$nm" "$2" | awk '{ print ($1 == "U") ? $2 : $3 }')
bad=$(printf '%s\n' "$names" | grep -E '^(wavecoder/|main\.)' \
    | grep -v -x 'wavecoder/wctoken\.\.inittask' || true)
if [ -n "$bad" ]; then
    echo "refused: the program defines or refers to the runner's own symbols:" $bad
    exit 1
fi
