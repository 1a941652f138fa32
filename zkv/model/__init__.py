"""The data model every layer shares: versions, records and ring tokens.

It sits below both ``zkv.storage`` and ``zkv.core`` (and imports neither), so a
store can hold records and find a key's token without knowing the protocol,
and the protocol can speak of records without knowing how they are stored.
"""
