"""The embedded demo corpus: general and radio-traffic English sentences spoken by eSpeak NG, made offline."""
