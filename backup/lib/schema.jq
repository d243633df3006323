# Summary: the JSON Schema keywords backup/manifest.schema.json uses ($ref to $defs, type, const, enum,
#          pattern, not, minimum, minItems, required, properties, additionalProperties, items), checked
#          by jq (the image has no other JSON Schema validator). Prints the first violation as
#          "PATH: what is wrong", nothing when the document matches.
# Usage: jq -r --slurpfile schema backup/manifest.schema.json -f backup/lib/schema.jq DOCUMENT
# Tests/e2e/test_manifest_schema.py checks that it agrees with Python's jsonschema.

def kinds: if type == "number" and . == floor then ["number", "integer"] else [type] end;
def shown: tojson | if length > 60 then .[0:57] + "..." else . end;

def violations($s; $root; $path):
  if ($s | has("$ref")) then violations($root["$defs"][$s["$ref"] | ltrimstr("#/$defs/")]; $root; $path)
  else
    . as $v
    | (($s.type // null) | if . == null then null elif type == "array" then . else [.] end) as $types
    | if $types != null and ([$v | kinds[] | select(. as $k | $types | index($k))] | length) == 0 then
        "\($path): \($v | type) where \($types | join(" or ")) is expected"
      else
        (if ($s | has("const")) and $v != $s.const then "\($path): \($v | shown) where \($s.const | tojson) is expected" else empty end),
        (if ($s | has("enum")) and ([$s.enum[] | select(. == $v)] | length) == 0
         then "\($path): \($v | shown) is not one of \($s.enum | map(tojson) | join(", "))" else empty end),
        (if ($s | has("pattern")) and ($v | type) == "string" and ($v | test($s.pattern) | not)
         then "\($path): \($v | shown) does not match \($s.pattern)" else empty end),
        (if ($s | has("not")) and ([$v | violations($s.not; $root; $path)] | length) == 0
         then "\($path): \($v | shown) is not allowed here" else empty end),
        (if ($s | has("minimum")) and ($v | type) == "number" and $v < $s.minimum
         then "\($path): \($v) is less than \($s.minimum)" else empty end),
        (if ($v | type) == "object" then
           ($v | to_entries[] | .key as $k | .value
             | if ($s.properties // {} | has($k)) then violations($s.properties[$k]; $root; "\($path).\($k)")
               elif $s.additionalProperties == false then "\($path): unexpected field \($k)"
               elif ($s.additionalProperties | type) == "object" then violations($s.additionalProperties; $root; "\($path).\($k)")
               else empty end),
           (($s.required // [])[] | select(. as $r | $v | has($r) | not) | "\($path): missing field \(.)")
         else empty end),
        (if ($v | type) == "array" then
           (if ($s | has("minItems")) and ($v | length) < $s.minItems then "\($path): fewer than \($s.minItems) items" else empty end),
           (if ($s | has("items")) then ($v | to_entries[] | .key as $i | .value | violations($s.items; $root; "\($path)[\($i)]")) else empty end)
         else empty end)
      end
  end;

first(violations($schema[0]; $schema[0]; "manifest")) // empty
